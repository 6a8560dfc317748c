-- Pricing: what tokens of a model cost, exactly.
--
-- Prices are integer nano-units per million tokens. A cost is the exact sum of tokens times
-- price over all dimensions, divided by a million and rounded up once, to the next whole
-- nano-unit: a charge is never priced below what the tokens cost.

-- The exact cost in nano-units of tokens at one set of prices per million tokens, plus a
-- per-request fee, rounded up once: input, cached input (cache reads), cache writes and output
-- tokens, each times its price, summed exactly with the fee (times a million) and divided by a
-- million. A missing count is zero.
CREATE OR REPLACE FUNCTION ledger.token_cost(p_input_tokens bigint, p_cached_input_tokens bigint,
                                             p_cache_write_tokens bigint, p_output_tokens bigint,
                                             p_input_per_mtok bigint,
                                             p_cached_input_per_mtok bigint,
                                             p_cache_write_per_mtok bigint,
                                             p_output_per_mtok bigint, p_per_request bigint)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ledger.ceil_div(coalesce(p_input_tokens, 0)::numeric * p_input_per_mtok
                           + coalesce(p_cached_input_tokens, 0)::numeric * p_cached_input_per_mtok
                           + coalesce(p_cache_write_tokens, 0)::numeric * p_cache_write_per_mtok
                           + coalesce(p_output_tokens, 0)::numeric * p_output_per_mtok
                           + coalesce(p_per_request, 0)::numeric * 1000000,
                           1000000)
$$;

-- The cost of tokens at price pr. A request's prompt (input + cached input + cache writes)
-- above a tier's above_input_tokens is priced whole at the highest such tier's rates (tiers
-- are kept in ascending order).
--
-- p_worst_case (a hold): the most any usage within the counts can cost, an upper bound for a
-- capture that stays within them. Which prompt tokens will be read from cache, written to it
-- or neither is known only after the call, so every prompt token is priced at the dearest of
-- the three rates; and a smaller prompt may fall into a lower tier, so every tier the prompt
-- could reach (the base and each tier below it) is priced and the dearest taken. With plain
-- prices (no tiers, cache rates at most the input rate) this is exactly the plain cost.
CREATE OR REPLACE FUNCTION ledger.tokens_at_price(pr prices, p_input_tokens bigint,
                                                  p_cached_input_tokens bigint,
                                                  p_cache_write_tokens bigint,
                                                  p_output_tokens bigint, p_worst_case boolean)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_prompt  numeric := coalesce(p_input_tokens, 0)::numeric
                         + coalesce(p_cached_input_tokens, 0) + coalesce(p_cache_write_tokens, 0);
    v_rates   jsonb;
    v_tier    jsonb;
    v_dearest bigint;
    v_cost    numeric;
    v_worst   numeric := 0;
BEGIN
    IF pr.tiers = '[]'::jsonb THEN
        -- Most prices have no tiers: no JSON to walk on the hot path.
        IF p_worst_case THEN
            RETURN ledger.ceil_div(
                v_prompt * greatest(pr.input_per_mtok, pr.cached_input_per_mtok,
                                    pr.cache_write_per_mtok)
                + coalesce(p_output_tokens, 0)::numeric * pr.output_per_mtok
                + pr.per_request::numeric * 1000000, 1000000);
        END IF;
        RETURN ledger.token_cost(p_input_tokens, p_cached_input_tokens, p_cache_write_tokens,
                                 p_output_tokens, pr.input_per_mtok, pr.cached_input_per_mtok,
                                 pr.cache_write_per_mtok, pr.output_per_mtok, pr.per_request);
    END IF;
    v_rates := jsonb_build_object(
        'input_per_mtok', pr.input_per_mtok, 'cached_input_per_mtok', pr.cached_input_per_mtok,
        'cache_write_per_mtok', pr.cache_write_per_mtok, 'output_per_mtok', pr.output_per_mtok);
    FOR v_tier IN
        SELECT rates FROM (
            SELECT v_rates AS rates, -1::numeric AS above
            UNION ALL
            SELECT t, (t ->> 'above_input_tokens')::numeric
            FROM jsonb_array_elements(pr.tiers) AS t
        ) AS r
        WHERE v_prompt > r.above
        ORDER BY r.above
    LOOP
        IF p_worst_case THEN
            v_dearest := greatest((v_tier ->> 'input_per_mtok')::bigint,
                                  (v_tier ->> 'cached_input_per_mtok')::bigint,
                                  (v_tier ->> 'cache_write_per_mtok')::bigint);
            v_cost := ledger.ceil_div(v_prompt * v_dearest
                                      + coalesce(p_output_tokens, 0)::numeric
                                        * (v_tier ->> 'output_per_mtok')::bigint
                                      + pr.per_request::numeric * 1000000, 1000000);
            v_worst := greatest(v_worst, v_cost);
        ELSE
            -- Base first, then the tiers the prompt is above, ascending: the last one applies.
            v_worst := ledger.token_cost(p_input_tokens, p_cached_input_tokens,
                                         p_cache_write_tokens, p_output_tokens,
                                         (v_tier ->> 'input_per_mtok')::bigint,
                                         (v_tier ->> 'cached_input_per_mtok')::bigint,
                                         (v_tier ->> 'cache_write_per_mtok')::bigint,
                                         (v_tier ->> 'output_per_mtok')::bigint, pr.per_request);
        END IF;
    END LOOP;
    RETURN v_worst;
END;
$$;

-- The cost of tokens of p_model, at the price in force at p_at (the row with the latest
-- effective_from not after it), for a budget kept in
-- p_currency (p_worst_case: a hold's, see ledger.tokens_at_price): OUT amount, or OUT problem
-- (no price in force, another currency, free, or beyond what a counter can hold).
CREATE OR REPLACE FUNCTION ledger.price_tokens(p_model text, p_currency text, p_at timestamptz,
                                               p_input_tokens bigint,
                                               p_cached_input_tokens bigint,
                                               p_cache_write_tokens bigint,
                                               p_output_tokens bigint, p_worst_case boolean,
                                               OUT amount bigint, OUT problem jsonb)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    pr      prices;
    v_cost  numeric;
BEGIN
    -- The price in force at p_at: the latest effective_from not after it. (Inline rather than
    -- a function of its own: PL/pgSQL caches this plan; a SQL function call would not be.)
    SELECT * INTO pr FROM prices WHERE model = p_model AND effective_from <= p_at
    ORDER BY effective_from DESC LIMIT 1;
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
    v_cost := ledger.tokens_at_price(pr, p_input_tokens, p_cached_input_tokens,
                                     p_cache_write_tokens, p_output_tokens, p_worst_case);
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
    SELECT EXISTS (SELECT 1 FROM prices WHERE model = p_model AND effective_from <= p_at)
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
