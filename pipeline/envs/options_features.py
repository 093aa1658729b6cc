"""What the options env computes once from a chain: the per-snapshot chain summary it observes, the first live
expiry of each snapshot (expiry offset 0 of an action) and each contract's Black-Scholes gamma and vega."""

from __future__ import annotations

import torch

from pipeline.envs.options_chain import OptionChainTensors, black_scholes_gamma_vega

MARKET_FEATURE_NAMES = ("spot_return", "return_from_open", "atm_iv", "term_slope", "skew", "atm_spread",
                        "time_of_day", "log_front_days")


def first_alive_expiry(chain: OptionChainTensors) -> torch.Tensor:
    """int64 [D, S]: the first expiry still alive at each snapshot (the last one if none is)."""
    alive = chain.expiry_days > 0
    last = torch.full_like(alive[..., 0], chain.shape[2] - 1, dtype=torch.long)
    return torch.where(alive.any(-1), alive.float().argmax(-1), last)


def contract_gamma_vega(chain: OptionChainTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """Black-Scholes gamma and vega per contract from the quoted IV ([D, S, E, K, 2]; 0 once expired)."""
    years = (chain.expiry_days / 365.0)[..., None, None]
    return black_scholes_gamma_vega(chain.underlying[:, :, None, None, None], chain.strike[:, None, :, :, None],
                                    years, chain.iv.clamp_min(1e-4))


def chain_summary(chain: OptionChainTensors, front: torch.Tensor) -> torch.Tensor:
    """float [D, S, len(MARKET_FEATURE_NAMES)]: the chain summary of each snapshot (`front`: first_alive_expiry)."""
    d, s, e, k = chain.shape
    device = chain.bid.device
    spot = chain.underlying
    ret = torch.zeros_like(spot)
    ret[:, 1:] = torch.log(spot[:, 1:] / spot[:, :-1]) * 100.0
    from_open = torch.log(spot / spot[:, :1]) * 100.0
    di = torch.arange(d, device=device)[:, None].expand(d, s)
    si = torch.arange(s, device=device)[None, :].expand(d, s)
    # ATM strike index per (day, snapshot, expiry): the reference strike of the IV and spread features.
    atm = (chain.strike[:, None] - chain.underlying[:, :, None, None]).abs().argmin(-1)
    second = (front + 1).clamp_max(e - 1)

    def iv_at(exp: torch.Tensor, k_off: int, right: int) -> torch.Tensor:
        kk = (atm[di, si, exp] + k_off).clamp(0, k - 1)
        return chain.iv[di, si, exp, kk, right]

    atm_front = 0.5 * (iv_at(front, 0, 0) + iv_at(front, 0, 1))
    atm_second = 0.5 * (iv_at(second, 0, 0) + iv_at(second, 0, 1))
    skew = iv_at(front, -2, 1) - iv_at(front, 2, 0)
    ka = atm[di, si, front]
    mid = chain.mid[di, si, front, ka].clamp_min(0.01)
    spread = (chain.ask[di, si, front, ka] - chain.bid[di, si, front, ka]) / mid
    tod = si.float() / max(s - 1, 1)
    dte = torch.log1p(chain.expiry_days[di, si, front].clamp_min(0))
    return torch.stack([ret, from_open, atm_front, atm_second - atm_front, skew, spread.mean(-1), tod, dte], -1)
