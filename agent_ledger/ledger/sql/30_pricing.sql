-- Pricing: what tokens of a model cost, exactly.
--
-- Prices are integer nano-units per million tokens. A cost is the exact sum of tokens times
-- price over all dimensions, divided by a million and rounded up once, to the next whole
-- nano-unit: a charge is never priced below what the tokens cost.

-- The exact cost in nano-units of tokens at prices per million tokens, rounded up once.
CREATE OR REPLACE FUNCTION ledger.token_cost(p_input_tokens bigint, p_output_tokens bigint,
                                  p_input_per_mtok bigint, p_output_per_mtok bigint)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ledger.ceil_div(coalesce(p_input_tokens, 0)::numeric * p_input_per_mtok
                           + coalesce(p_output_tokens, 0)::numeric * p_output_per_mtok,
                           1000000)
$$;

-- The cost of tokens of p_model for a budget kept in p_currency: OUT amount, or OUT problem
-- (unknown model, another currency, free, or beyond what a counter can hold).
CREATE OR REPLACE FUNCTION ledger.price_tokens(p_model text, p_currency text, p_input_tokens bigint,
                                    p_output_tokens bigint, OUT amount bigint, OUT problem jsonb)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    pr      prices;
    v_cost  numeric;
BEGIN
    SELECT * INTO pr FROM prices WHERE model = p_model;
    IF NOT FOUND THEN
        problem := ledger.problem(422, 'unknown-model',
            format('No price is set for model %L.', p_model));
        RETURN;
    END IF;
    IF pr.currency <> p_currency THEN
        problem := ledger.problem(422, 'currency-mismatch',
            format('Model %L is priced in %s; this budget is kept in %s.',
                   p_model, pr.currency, p_currency));
        RETURN;
    END IF;
    v_cost := ledger.token_cost(p_input_tokens, p_output_tokens, pr.input_per_mtok,
                                pr.output_per_mtok);
    IF v_cost = 0 THEN
        problem := ledger.problem(422, 'validation-error',
            format('These tokens of %L cost nothing; amounts must be greater than zero.',
                   p_model));
    ELSIF v_cost > ledger.max_nanos() THEN
        problem := ledger.problem(422, 'amount-out-of-range',
            'These tokens cost more than the ledger can record in one entry.');
    ELSE
        amount := v_cost;
    END IF;
END;
$$;

-- Whether p_model has a price in force at p_at (in any currency).
CREATE OR REPLACE FUNCTION ledger.has_price(p_model text, p_at timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (SELECT 1 FROM prices WHERE model = p_model)
$$;

-- 422 server-pricing-required when the agent a or its team t requires server pricing and a
-- request names its own p_amount for p_model, a model the server has a price for (the client
-- would be setting the price of a priced model, issue 12); NULL otherwise. Amount-only
-- requests, and amounts for models without a price (a tool, a service), stay the client's.
CREATE OR REPLACE FUNCTION ledger.pricing_refusal(a balances, t balances, p_amount bigint,
                                                  p_model text, p_at timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF p_amount IS NULL OR p_model IS NULL
       OR NOT (a.require_server_pricing OR coalesce(t.require_server_pricing, false))
       OR NOT ledger.has_price(p_model, p_at) THEN
        RETURN NULL;
    END IF;
    RETURN ledger.problem(422, 'server-pricing-required',
        format('The %s''s budget requires server pricing: model %L has a price, so send its '
               'token counts instead of an amount. Nothing was written.',
               CASE WHEN a.require_server_pricing THEN 'agent' ELSE 'team' END, p_model),
        jsonb_build_object('scope', CASE WHEN a.require_server_pricing THEN 'agent' ELSE 'team' END,
                           'model', p_model));
END;
$$;
