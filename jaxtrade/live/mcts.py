"""The mcts agent's evaluation search in numpy: gumbel or stochastic MuZero, exact accounting.

agents/mcts.py acts (deterministically) with one of two mctx policies (the bundle's
`network.search`); this module repeats either step for step in float32, for one root:

  gumbel      `gumbel_muzero_policy` at gumbel scale 0: Sequential Halving over all actions
              with zero Gumbel noise at the root, the deterministic visit-matching rule below
              the root, Q values completed with the mixed value
              (`qtransform_completed_by_mix_value`: value scale 0.1, max-visit offset 50,
              rescaled to [0, 1]); the action is the Sequential Halving winner.
  stochastic  `stochastic_muzero_policy` at Dirichlet fraction 0: the root's prior is
              log(softmax(logits)) (the noise mix at fraction 0), decision nodes select by
              PUCT (`pb_c_init` from the checkpoint, pb_c_base 19652, Q values normalized by
              the node's value and its visited children, `qtransform_by_parent_and_siblings`,
              unvisited ones at the minimum), chance nodes take argmax p_k / (n_k + 1) over
              the G x R outcomes (deterministic given the tree); the action is the argmax of
              the root's visit counts (the first on ties), as agents/mcts.py takes it.
              mctx adds 1e-7 * U(0, 1) to the PUCT scores to break ties, keyed by the
              policy's random key, even at Dirichlet fraction 0; the runner has no key and
              breaks ties by the first index (scores within 1e-7 of each other only).

The tree:

  node        the portfolio (cash, units, entry/best price, bars held, equity, peaks, breaker
              pause) and its close; ATR, volatility and regime stay bar t's
  edge        `decide` (envs.accounting.decide: ATR sizing, leverage cap, pause, no-trade
              band, cost rate) then every next-bar outcome of the model settled exactly
              (envs.accounting.settle: fills, costs, stops, carry, reward, breaker). gumbel:
              the edge's reward and value are the outcome-probability-weighted means; the
              child continues from the most probable outcome (the agent does the same when
              deterministic). stochastic: the decision is a chance node (the afterstate)
              whose value is the expectation over outcomes of reward + gamma * alive * value;
              its child for outcome k is that outcome's settled book (discount
              gamma * alive_k)
  network     torso(window) -> latent; joint(latent, portfolio) -> policy logits and value;
              model head(latent) -> G x R outcome logits (the root's latent at every depth)

numpy + stdlib only (the bundle's runner imports nothing else). tests/test_export_mcts.py
checks that a runner with this search trades the backtest's positions bar for bar.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BundleError
from .ledger import stop_fills, track_entry_arrays
from .network import ACTIVATIONS, _dense, _layer_norm

F32 = np.float32
BPS = F32(1e-4)
TINY = np.finfo(F32).tiny
SEARCHES = ("gumbel", "stochastic")
PB_C_BASE = 19652  # mctx stochastic_muzero_policy's default (agents/mcts.py keeps it)


def _f(x) -> np.float32:
    return np.float32(x)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def considered_visits(max_considered: int, num_simulations: int) -> tuple[int, ...]:
    """mctx seq_halving.get_sequence_of_considered_visits."""
    if max_considered <= 1:
        return tuple(range(num_simulations))
    log2max = int(math.ceil(math.log2(max_considered)))
    sequence: list[int] = []
    visits = [0] * max_considered
    num_considered = max_considered
    while len(sequence) < num_simulations:
        extra = max(1, int(num_simulations / (log2max * num_considered)))
        for _ in range(extra):
            sequence.extend(visits[:num_considered])
            for i in range(num_considered):
                visits[i] += 1
        num_considered = max(2, num_considered // 2)
    return tuple(sequence[:num_simulations])


class Portfolio:
    """A node's exact book (scalars, or [K] arrays for the outcomes of one edge)."""

    __slots__ = ("cash", "units", "entry", "best", "bars", "equity", "peak", "breaker_peak",
                 "pause_left", "close")

    def __init__(self, cash, units, entry, best, bars, equity, peak, breaker_peak, pause_left,
                 close):
        self.cash, self.units, self.entry, self.best = cash, units, entry, best
        self.bars, self.equity, self.peak = bars, equity, peak
        self.breaker_peak, self.pause_left, self.close = breaker_peak, pause_left, close

    def pick(self, k: int) -> Portfolio:
        return Portfolio(*(np.asarray(getattr(self, n))[k] for n in self.__slots__))


def portfolio_vectors(p: Portfolio) -> np.ndarray:
    """envs.observation.portfolio_vector, [..., 5] float32."""
    units, close, equity = p.units, p.close, p.equity
    safe = np.where(np.abs(equity) > F32(1e-12), equity, F32(1e-12)).astype(F32)
    weight = units * close / safe
    side = np.sign(units)
    entry = np.where(p.entry > 0, p.entry, F32(1.0)).astype(F32)
    unrealized = np.where(side != 0, side * (close / entry - F32(1.0)), F32(0.0)).astype(F32)
    held = np.log1p(np.asarray(p.bars, F32))
    drawdown = F32(1.0) - equity / p.peak
    return np.stack(np.broadcast_arrays(weight, unrealized, held, drawdown, p.cash / safe),
                    axis=-1).astype(F32)


class MCTSPlanner:
    """The exported search: `act(window, portfolio, atr, volatility, regime) -> action`."""

    def __init__(self, manifest: dict, params: dict[str, np.ndarray]) -> None:
        from .network import _nest

        net = manifest["network"]
        self.kind = net.get("search", "gumbel")
        if self.kind not in SEARCHES:
            raise BundleError(f"mcts search {self.kind!r} is not supported by the runner")
        if self.kind == "stochastic" and "pb_c_init" not in net:
            raise BundleError("a stochastic mcts bundle needs network.pb_c_init")
        config = net.get("config", {})
        activation = config.get("activation", "relu")
        if activation not in ACTIVATIONS:
            raise BundleError(f"activation {activation!r} is not supported by the runner")
        self.act_fn = ACTIVATIONS[activation]
        self.params = _nest({k: np.asarray(v, F32) for k, v in params.items()})
        missing = [n for n in ("torso", "joint", "policy_head", "value_head", "model_head")
                   if n not in self.params]
        if missing:
            raise BundleError(f"bundle weights lack {missing}")
        self.num_simulations = int(net["num_simulations"])
        self.max_depth = int(net.get("max_depth", 0)) or self.num_simulations
        self.gamma = _f(net["gamma"])
        self.pb_c_init = _f(net.get("pb_c_init", 1.25))
        self.pb_c_base = int(net.get("pb_c_base", PB_C_BASE))
        self.gap_z = np.asarray(net["gap_centers_vol"], F32)
        self.ret_z = np.asarray(net["return_centers_vol"], F32)
        self.num_ret = self.ret_z.shape[0]
        self.num_outcomes = self.gap_z.shape[0] * self.num_ret
        self.levels = np.asarray(manifest["action"]["discrete_levels"], F32)
        self.num_actions = self.levels.shape[0]
        self.table = considered_visits(self.num_actions, self.num_simulations)
        self.costs, self.trading = manifest["costs"], manifest["trading"]
        self.risk, self.reward = manifest.get("risk", {}), manifest.get("reward", {})
        if _f(self.reward.get("w_dsr", 0.0)) != 0 or _f(self.reward.get("w_ddr", 0.0)) != 0:
            raise BundleError("the mcts runner does not carry the differential Sharpe "
                              "statistics: reward.w_dsr and reward.w_ddr must be 0")
        g, r = np.divmod(np.arange(self.num_outcomes), self.num_ret)
        self._gap = self.gap_z[g]
        self._ret = self.ret_z[r]
        self.obs_shape = tuple(int(d) for d in net.get("obs_shape", ()))

    def initial_carry(self) -> None:
        return None

    @staticmethod
    def root(ledger, close) -> Portfolio:
        """The root node: the paper ledger's book marked at this bar's close."""
        return Portfolio(ledger.cash, ledger.units, ledger.entry_price, ledger.best_price,
                         ledger.bars_in_position, ledger.equity, ledger.peak_equity,
                         ledger.breaker_peak, ledger.pause_left, np.float32(close))

    # --- network ------------------------------------------------------------------------------
    def _mlp(self, x: np.ndarray, p: dict) -> np.ndarray:
        i = 0
        while f"Dense_{i}" in p:
            x = _dense(x, p[f"Dense_{i}"])
            x = self.act_fn(_layer_norm(x, p[f"LayerNorm_{i}"]) if f"LayerNorm_{i}" in p else x)
            i += 1
        return x

    def embed(self, window: np.ndarray) -> np.ndarray:
        return self._mlp(np.asarray(window, F32).reshape(1, -1), self.params["torso"])

    def predict(self, latent: np.ndarray, portfolio: np.ndarray):
        """Policy logits [n, A] and values [n] of portfolio vectors [n, 5]."""
        n = portfolio.shape[0]
        x = np.concatenate([np.broadcast_to(latent, (n, latent.shape[-1])), portfolio], -1)
        z = self._mlp(x, self.params["joint"])
        return _dense(z, self.params["policy_head"]), _dense(z, self.params["value_head"])[:, 0]

    def outcome_probs(self, latent: np.ndarray) -> np.ndarray:
        return _softmax(_dense(latent, self.params["model_head"]))[0]

    # --- exact accounting (envs.accounting, one asset) ----------------------------------------
    def decide(self, p: Portfolio, action: int, atr, volatility, regime):
        c, r, tr = self.costs, self.risk, self.trading
        close = p.close
        w = self.levels[action] / F32(1.0)
        if tr.get("long_only", False):
            w = max(w, F32(0.0))
        if r.get("atr_sizing", False):
            sl = _f(r.get("stop_loss_atr", 0.0))
            distance = max((sl if sl > 0 else F32(1.0)) * atr, F32(1e-12))
            w = w * _f(r.get("risk_per_trade", 0.01)) * close / distance
        limit = _f(tr.get("max_leverage", 1.0))
        if r.get("regime_caps", False):
            caps = np.asarray(r.get("regime_max_leverage", (5.0, 2.0, 1.0)), F32)
            limit = min(limit, caps[int(np.argmax(regime))])
        w = w * min(F32(1.0), limit / max(abs(w), F32(1e-12)))
        paused = p.pause_left > 0
        if paused:
            w = F32(0.0)
        target = w * p.equity / close
        delta = target - p.units
        if abs(delta) * close < _f(c.get("min_trade_fraction", 0.001)) * abs(p.equity):
            delta = F32(0.0)
        slippage = min(_f(c.get("slippage_vol_mult", 0.05)) * volatility / BPS,
                       _f(c.get("slippage_cap_bps", 25.0)))
        rate = (_f(c.get("fee_bps", 1.0)) + _f(c.get("half_spread_bps", 1.0)) + slippage
                + F32(0.0)) * BPS
        return _f(delta), _f(rate), paused

    def settle(self, p: Portfolio, delta, rate, paused, atr, open1, close1):
        """The K modelled bars (open1, close1 [K]) settle the order: (children, rewards,
        alive [K])."""
        c, r, tr, rw = self.costs, self.risk, self.trading, self.reward
        high1 = np.maximum(np.maximum(open1, close1), open1)
        low1 = np.minimum(np.minimum(open1, close1), open1)
        at_close = bool(tr.get("fill_at_close", False))
        d_open = F32(0.0) if at_close else delta
        fee_open = np.abs(d_open) * open1 * rate
        cash = p.cash - d_open * open1 - fee_open
        units = np.full_like(open1, p.units + d_open)
        entry, best, bars = track_entry_arrays(p.units, units, p.entry, p.best, p.bars, open1)

        hit, exit_units, stop_price = stop_fills(
            units, entry, best, atr, open1, high1, low1,
            _f(r.get("stop_loss_atr", 0.0)), _f(r.get("trailing_stop_atr", 0.0)))
        fee_stop = np.abs(exit_units) * stop_price * rate
        cash = cash - exit_units * stop_price - fee_stop
        held = units
        units = units + exit_units
        entry, best, bars = track_entry_arrays(held, units, entry, best, bars, stop_price)
        best = np.where(units > 0, np.maximum(best, high1),
                        np.where(units < 0, np.minimum(best, low1), best)).astype(F32)

        d_close = np.where(at_close & ~hit, delta, F32(0.0)).astype(F32)
        fee_close = np.abs(d_close) * close1 * rate
        cash = cash - d_close * close1 - fee_close
        before = units
        units = units + d_close
        entry, best, bars = track_entry_arrays(before, units, entry, best, bars, close1)
        bars = np.where(units != 0, bars + 1, 0)

        carry = (np.maximum(-units, F32(0.0)) * close1 * _f(c.get("borrow_bps_per_bar", 0.4))
                 * BPS + np.maximum(-cash, F32(0.0)) * _f(c.get("funding_bps_per_bar", 0.0))
                 * BPS)
        cash = cash - carry
        equity = (cash + units * close1).astype(F32)
        peak = np.maximum(p.peak, equity)
        initial = _f(tr.get("initial_equity", 1.0))
        floor = F32(1e-6) * initial
        log_r = np.log(np.maximum(equity, floor)) - np.log(max(p.equity, floor))
        traded = (np.abs(d_open) * open1 + np.abs(exit_units) * stop_price
                  + np.abs(d_close) * close1)
        drawdown = F32(1.0) - equity / peak
        prev_drawdown = F32(1.0) - p.equity / p.peak
        turnover = traded / max(abs(p.equity), floor)
        reward = _f(rw.get("scale", 1.0)) * (
            _f(rw.get("w_log_return", 1.0)) * log_r + F32(0.0) + F32(0.0)
            - _f(rw.get("drawdown_penalty", 0.0)) * np.maximum(drawdown - prev_drawdown,
                                                               F32(0.0))
            - _f(rw.get("turnover_penalty", 0.0)) * turnover
            - _f(rw.get("tail_penalty", 0.0)) * np.maximum(
                -log_r - _f(rw.get("tail_threshold", 0.02)), F32(0.0)))

        pause_left = max(p.pause_left - 1, 0)
        breaker_peak = np.maximum(p.breaker_peak, equity)
        cb = _f(r.get("circuit_breaker_drawdown", 0.0))
        trip = (cb > 0) & (F32(1.0) - equity / breaker_peak >= cb) & (not paused)
        pause_left = np.where(trip, int(r.get("pause_bars", 20)), pause_left)
        breaker_peak = np.where(trip, equity, breaker_peak).astype(F32)
        alive = (equity > _f(r.get("bankruptcy_fraction", 0.05)) * initial).astype(F32)
        children = Portfolio(cash.astype(F32), units.astype(F32), entry, best, bars, equity,
                             peak.astype(F32), breaker_peak, pause_left, close1)
        return children, reward.astype(F32), alive

    # --- the search ---------------------------------------------------------------------------
    def search(self, window, root: Portfolio, atr, volatility, regime):
        """(action, policy [A], root value) of the search from `root` at bar t: gumbel's
        improved policy, or stochastic's root visit distribution."""
        if self.kind == "stochastic":
            return self._stochastic_search(window, root, atr, volatility, regime)
        return self._gumbel_search(window, root, atr, volatility, regime)

    def _outcomes(self, latent, node: Portfolio, order, atr, volatility, outcomes=None):
        """The modelled next bars (all G x R, or the `outcomes` slice) settle `order` (decide's
        delta, rate, paused): (children, rewards, alive, policy logits, values) [K]."""
        gap, ret = (self._gap, self._ret) if outcomes is None else (self._gap[outcomes],
                                                                    self._ret[outcomes])
        scale = max(volatility, F32(1e-4))
        open1 = (node.close * np.exp(gap * scale)).astype(F32)
        close1 = (open1 * np.exp(ret * scale)).astype(F32)
        children, rewards, alive = self.settle(node, *order, atr, open1, close1)
        logits, values = self.predict(latent, portfolio_vectors(children))
        return children, rewards, alive, logits, values

    def _recurrent(self, latent, probs, node: Portfolio, action: int, bar):
        atr, volatility, regime = bar
        order = self.decide(node, action, atr, volatility, regime)
        children, rewards, alive, logits, values = self._outcomes(latent, node, order, atr,
                                                                  volatility)
        reward = np.sum(probs * rewards, dtype=F32)
        value = np.sum(probs * alive * values, dtype=F32)
        k = int(np.argmax(probs))
        return logits[k], reward, value, children.pick(k)

    def _qtransform(self, t, node: int) -> np.ndarray:
        visits = t["children_visits"][node]
        q = t["children_rewards"][node] + t["children_discounts"][node] * t["children_values"][
            node]
        prior = np.maximum(TINY, _softmax(t["children_prior_logits"][node]))
        visited = visits > 0
        total = F32(visits.sum())
        sum_probs = np.sum(np.where(visited, prior, F32(0.0)), dtype=F32)
        weighted = np.sum(np.where(visited, prior * q / (sum_probs if visited.any() else F32(1.0)),
                                   F32(0.0)), dtype=F32)
        mixed = (t["raw_values"][node] + total * weighted) / (total + F32(1.0))
        completed = np.where(visited, q, mixed).astype(F32)
        low, high = completed.min(), completed.max()
        completed = (completed - low) / max(high - low, F32(1e-8))
        scale = F32(50.0) + F32(visits.max())
        return (scale * F32(0.1) * completed).astype(F32)

    def _score_considered(self, considered, logits, q, visits) -> np.ndarray:
        logits = logits - logits.max()
        penalty = np.where(visits == considered, F32(0.0), F32(-np.inf))
        return np.maximum(F32(-1e9), F32(0.0) + logits + q) + penalty

    def _select(self, t, node: int, depth: int) -> int:
        visits = t["children_visits"][node]
        prior = t["children_prior_logits"][node]
        q = self._qtransform(t, node)
        if depth == 0:
            considered = self.table[int(visits.sum())]
            return int(np.argmax(self._score_considered(considered, prior, q, visits)))
        probs = _softmax(prior + q)
        return int(np.argmax(probs - visits.astype(F32) / F32(1 + visits.sum())))

    @staticmethod
    def _tree(n: int, a: int) -> dict[str, np.ndarray]:
        """mctx's Tree arrays for one root: n nodes, a children each."""
        return {"visits": np.zeros(n, np.int64), "raw_values": np.zeros(n, F32),
                "node_values": np.zeros(n, F32), "parents": np.full(n, -1),
                "action_from_parent": np.full(n, -1),
                "children_index": np.full((n, a), -1),
                "children_prior_logits": np.zeros((n, a), F32),
                "children_values": np.zeros((n, a), F32),
                "children_visits": np.zeros((n, a), np.int64),
                "children_rewards": np.zeros((n, a), F32),
                "children_discounts": np.zeros((n, a), F32)}

    def _descend(self, t, select) -> tuple[int, int]:
        """mctx search.simulate: (parent, action) where the simulation leaves the tree (an
        unvisited action, or the depth limit)."""
        node, depth = 0, 0
        while True:
            action = select(node, depth)
            nxt = int(t["children_index"][node, action])
            depth += 1
            if nxt != -1 and depth < self.max_depth:
                node = nxt
                continue
            return node, action

    @classmethod
    def _expand(cls, t, nodes, sim, parent, action, prior, reward, discount, value, embedding
                ) -> int:
        """mctx search.expand + backward: the node index written."""
        nxt = int(t["children_index"][parent, action])
        if nxt == -1:
            nxt = sim + 1
        cls._set_node(t, nodes, nxt, prior, value, embedding)
        t["children_index"][parent, action] = nxt
        t["children_rewards"][parent, action] = reward
        t["children_discounts"][parent, action] = discount
        t["parents"][nxt] = parent
        t["action_from_parent"][nxt] = action
        cls._backward(t, nxt)
        return nxt

    def _gumbel_search(self, window, root: Portfolio, atr, volatility, regime):
        """(action, improved policy [A], root value) of the gumbel search."""
        atr, volatility = _f(atr), _f(volatility)
        bar = (atr, volatility, regime)
        latent = self.embed(window)
        probs = self.outcome_probs(latent)
        n, a = self.num_simulations + 1, self.num_actions
        t = self._tree(n, a)
        nodes: list[Portfolio | None] = [None] * n
        logits, value = self.predict(latent, portfolio_vectors(root)[None])
        self._set_node(t, nodes, 0, logits[0], value[0], root)
        select = lambda node, depth: self._select(t, node, depth)
        for sim in range(self.num_simulations):
            parent, action = self._descend(t, select)
            prior, reward, value, child = self._recurrent(latent, probs, nodes[parent], action,
                                                          bar)
            self._expand(t, nodes, sim, parent, action, prior, reward, self.gamma, value, child)
        visits = t["children_visits"][0]
        q = self._qtransform(t, 0)
        prior = t["children_prior_logits"][0]
        action = int(np.argmax(self._score_considered(visits.max(), prior, q, visits)))
        return action, _softmax(prior + q), float(t["node_values"][0])

    # --- stochastic MuZero ------------------------------------------------------------------
    def _qtransform_siblings(self, t, node: int) -> np.ndarray:
        """mctx qtransform_by_parent_and_siblings over the node's A actions."""
        a = self.num_actions
        visits = t["children_visits"][node, :a]
        q = t["children_rewards"][node, :a] + t["children_discounts"][node, :a] * t[
            "children_values"][node, :a]
        value = t["node_values"][node]
        visited = visits > 0
        safe = np.where(visited, q, value)
        low = np.minimum(value, safe.min())
        high = np.maximum(value, safe.max())
        completed = np.where(visited, q, low)
        return ((completed - low) / np.maximum(high - low, F32(1e-8))).astype(F32)

    def _puct(self, t, node: int) -> int:
        """mctx muzero_action_selection at a decision node (without its 1e-7 random
        tie-break: the first of equal scores)."""
        a = self.num_actions
        visits = t["children_visits"][node, :a]
        count = int(t["visits"][node])
        pb_c = self.pb_c_init + np.log((F32(count + self.pb_c_base) + F32(1.0))
                                       / F32(self.pb_c_base))
        prior = _softmax(t["children_prior_logits"][node, :a])
        policy = np.sqrt(F32(count)) * pb_c * prior / (visits + 1).astype(F32)
        return int(np.argmax(self._qtransform_siblings(t, node) + policy))

    def _stochastic_search(self, window, root: Portfolio, atr, volatility, regime):
        """(action, root visit distribution [A], root value) of the stochastic search.

        Nodes alternate: a decision node holds a book, its action's child is the chance
        node of the order (the book and decide's (delta, rate, paused)); a chance node's
        child for outcome k (child index A + k) is that outcome's settled book."""
        atr, volatility = _f(atr), _f(volatility)
        latent = self.embed(window)
        chance_logits = _dense(latent, self.params["model_head"])[0]
        probs = _softmax(chance_logits)
        n, a, c = self.num_simulations + 1, self.num_actions, self.num_outcomes
        t = self._tree(n, a + c)
        nodes: list = [None] * n
        decision = np.zeros(n, bool)
        no_actions = np.full(a, -np.inf, F32)
        no_outcomes = np.full(c, -np.inf, F32)
        chance_prior = np.concatenate([no_actions, chance_logits]).astype(F32)
        logits, value = self.predict(latent, portfolio_vectors(root)[None])
        # The root's Dirichlet mix at fraction 0 leaves log(max(softmax(logits), tiny)).
        root_prior = np.log(np.maximum(_softmax(logits[0]), TINY))
        self._set_node(t, nodes, 0, np.concatenate([root_prior, no_outcomes]), value[0], root)
        decision[0] = True

        def select(node: int, depth: int) -> int:
            if decision[node]:
                return self._puct(t, node)
            return a + int(np.argmax(probs / (t["children_visits"][node, a:] + 1).astype(F32)))

        for sim in range(self.num_simulations):
            parent, action = self._descend(t, select)
            if decision[parent]:  # the order: a chance node valued over every outcome
                book = nodes[parent]
                order = self.decide(book, action, atr, volatility, regime)
                _, rewards, alive, _, values = self._outcomes(latent, book, order, atr,
                                                              volatility)
                expected = np.sum(probs * (rewards + self.gamma * alive * values), dtype=F32)
                nxt = self._expand(t, nodes, sim, parent, action, chance_prior, F32(0.0),
                                   F32(1.0), expected, (book, order))
            else:  # outcome k of the order: the settled book
                book, order = nodes[parent]
                k = np.array([action - a])
                child, rewards, alive, logits, values = self._outcomes(
                    latent, book, order, atr, volatility, k)
                prior = np.concatenate([logits[0], no_outcomes]).astype(F32)
                nxt = self._expand(t, nodes, sim, parent, action, prior, rewards[0],
                                   self.gamma * alive[0], values[0], child.pick(0))
            decision[nxt] = not decision[parent]
        visits = t["children_visits"][0, :a]
        total = visits.sum()
        weights = (visits.astype(F32) / F32(max(total, 1))).astype(F32)
        return int(np.argmax(weights)), weights, float(t["node_values"][0])

    @staticmethod
    def _set_node(t, nodes, index, logits, value, portfolio) -> None:
        t["children_prior_logits"][index] = logits
        t["raw_values"][index] = value
        t["node_values"][index] = value
        t["visits"][index] += 1
        nodes[index] = portfolio

    @staticmethod
    def _backward(t, leaf: int) -> None:
        value = t["node_values"][leaf]
        index = leaf
        while index != 0:
            parent = int(t["parents"][index])
            count = t["visits"][parent]
            action = int(t["action_from_parent"][index])
            value = t["children_rewards"][parent, action] + t["children_discounts"][
                parent, action] * value
            t["node_values"][parent] = (t["node_values"][parent] * F32(count) + value) / F32(
                count + 1)
            t["children_values"][parent, action] = t["node_values"][index]
            t["children_visits"][parent, action] += 1
            t["visits"][parent] = count + 1
            index = parent
