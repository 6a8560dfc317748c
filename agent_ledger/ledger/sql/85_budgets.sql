-- Budgets as the API reads and sets them, one balance row at a time.
--
-- Functions rather than statements over balances: a budget's status needs the row and its
-- live held together, and on Citus a statement cannot hand a distributed table's whole row to
-- a function (the node sees its shard's row type), while a function can read the row itself.

-- The budget of the balance row of p_owner_id (of type p_owner_type) in home p_home_id as
-- reported at p_at, and its alert thresholds; NULL when there is none.
CREATE OR REPLACE FUNCTION ledger.budget_of(p_home_id text, p_owner_type text, p_owner_id text,
                                            p_at timestamptz, OUT budget budget_snapshot,
                                            OUT alert_thresholds numeric[])
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    b balances;
BEGIN
    SELECT * INTO b FROM balances
    WHERE home_id = p_home_id AND owner_type = p_owner_type AND owner_id = p_owner_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    budget := ledger.snapshot(b, ledger.live_held(b, p_at), p_at);
    alert_thresholds := b.alert_thresholds;
END;
$$;

-- Sets the limits, currency and alert thresholds of one balance row (a missing limit: none),
-- and whether it requires server pricing (NULL: as it was), under its row lock.
-- OUT before and after: the budget around the change; OUT problem: 409 when the currency would
-- change under money already recorded in the old one (nothing is changed then). All NULL when
-- there is no such row.
--
-- A window whose limit changes has its thresholds re-armed (its crossings forgotten), and a
-- threshold that spent + held already reaches under the new settings is announced right away:
-- an alert set at 80% on a budget at 90% says so now, not never.
CREATE OR REPLACE FUNCTION ledger.set_limits(
    p_home_id      text,
    p_owner_type   text,
    p_owner_id     text,
    p_currency     text,
    p_total        bigint,
    p_month        bigint,
    p_day          bigint,
    p_per_charge   bigint,
    p_require_server_pricing boolean,
    p_thresholds   numeric[],
    p_at           timestamptz,
    OUT before     budget_snapshot,
    OUT after      budget_snapshot,
    OUT problem    jsonb,
    OUT thresholds_before  numeric[],
    OUT alert_thresholds   numeric[]
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    b balances;
BEGIN
    SELECT * INTO b FROM balances
    WHERE home_id = p_home_id AND owner_type = p_owner_type AND owner_id = p_owner_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    before := ledger.snapshot(b, ledger.live_held(b, p_at), p_at);
    thresholds_before := b.alert_thresholds;
    IF coalesce(p_currency, b.currency) <> b.currency
       AND (b.entry_count > 0 OR b.spent_total <> 0 OR b.held <> 0) THEN
        problem := ledger.problem(409, 'conflict',
            format('This budget already has money in %s; its currency cannot change.',
                   b.currency));
        RETURN;
    END IF;
    DELETE FROM alert_crossings
    WHERE home_id = p_home_id AND owner_id = p_owner_id
      AND ("window" = 'total' AND b.limit_total IS DISTINCT FROM p_total
           OR "window" = 'month' AND b.limit_month IS DISTINCT FROM p_month
           OR "window" = 'day' AND b.limit_day IS DISTINCT FROM p_day);
    UPDATE balances SET currency = coalesce(p_currency, b.currency), limit_total = p_total,
        limit_month = p_month, limit_day = p_day, limit_per_charge = p_per_charge,
        require_server_pricing = coalesce(p_require_server_pricing, b.require_server_pricing),
        alert_thresholds = p_thresholds
    WHERE home_id = p_home_id AND owner_id = p_owner_id
    RETURNING * INTO b;
    after := ledger.snapshot(b, ledger.live_held(b, p_at), p_at);
    alert_thresholds := b.alert_thresholds;
    PERFORM ledger.note_crossings(b, p_at);
END;
$$;
