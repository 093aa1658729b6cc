"""The observation windows of a batch of envs, kept in one preallocated device buffer and updated in place.

An observation is the last T rows of an env's history, [N, T, F]. Copying and concatenating that window afresh
every step costs O(N*T*F) memory traffic, which stops fitting in cache as N grows. Here a step writes one row per
env (O(N*F)): the buffer is a ring of 2T time slots, each a contiguous [N, F] block, and holds every row twice,
at slots p and p+T. The ring position advances once per step for all envs, so the last T rows are always the one
slice [p+1, p+1+T) of the ring.

`obs` is a VIEW into the buffer: the next `push` overwrites its oldest row. Use it before the next step, or copy
it (`obs.clone()`) to keep it. Restarting envs (a new episode) rewrites their whole window; on the CPU only the
restarted envs are touched, on accelerators every env is addressed (restarted ones for real, the others through
a scratch slot) so that no step reads a tensor on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

RowParts = Callable[[torch.Tensor], Sequence[torch.Tensor]]
"""Given env indices [K], the column blocks ([K, f_i] each, summing to F) of those envs' observation rows."""


class RollingWindow:
    """Preallocated [N, T, F] observation windows: `push` one row per env, `restart` some envs' windows."""

    def __init__(
        self, num_envs: int, window: int, features: int, device: torch.device | str, padded: bool | None = None
    ) -> None:
        """`padded`: address every env on restarts (a fixed shape, no host sync); default: on accelerators."""
        self.num_envs, self.window = int(num_envs), int(window)
        self.device = torch.device(device)
        self.padded = self.device.type != "cpu" if padded is None else bool(padded)
        # Env slot num_envs is scratch: on accelerators, envs that are not restarted write there.
        self._ring = torch.zeros(2 * self.window, self.num_envs + 1, features, device=self.device)
        self._final = torch.zeros(self.num_envs + 1, self.window, features, device=self.device)
        self._newest = self.window - 1
        self._env_ids = torch.arange(self.num_envs, device=self.device)

    @property
    def obs(self) -> torch.Tensor:
        """float32 [N, T, F], oldest row first: a view that the next `push` overwrites."""
        start = self._newest + 1
        return self._ring[start : start + self.window, : self.num_envs].transpose(0, 1)

    @property
    def final_obs(self) -> torch.Tensor:
        """float32 [N, T, F]: per env, the window it had when its last episode ended (see `restart`); a view."""
        return self._final[: self.num_envs]

    def push(self, parts: Sequence[torch.Tensor]) -> None:
        """Append one row per env, given as column blocks ([N, f_i] each); the oldest row of each window drops."""
        self._newest = (self._newest + 1) % self.window
        slot = self._ring[self._newest, : self.num_envs]
        torch.cat(list(parts), dim=1, out=slot)
        self._ring[self._newest + self.window, : self.num_envs] = slot

    def restart(self, mask: torch.Tensor, rows: RowParts, keep_final: torch.Tensor | None = None) -> None:
        """Envs in `mask` start over: every row of their window becomes their row `rows(env indices)`.

        Envs in `keep_final` (a subset of `mask`) first save their window as `final_obs`.
        """
        index = self._select(mask)
        if index.numel() == 0:  # known on the host without a sync: the exact (CPU) index has a dynamic size
            return
        if keep_final is not None:
            saved = self._select(keep_final)
            start = self._newest + 1
            self._final[saved] = self._ring[start : start + self.window, saved].transpose(0, 1)
        values = torch.cat(list(rows(index.clamp(max=self.num_envs - 1))), dim=1)
        self._ring[:, index] = values.unsqueeze(0).expand(2 * self.window, -1, -1)

    def _select(self, mask: torch.Tensor) -> torch.Tensor:
        """Env slots of the envs in `mask`: exactly those (a dynamic shape, free on the CPU), or `padded`: one per
        env with the others pointed at the scratch slot (a fixed shape, no host sync)."""
        if not self.padded:
            return mask.nonzero().squeeze(1)
        return torch.where(mask, self._env_ids, self.num_envs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The current windows, oldest row first (a copy)."""
        return {"obs": self.obs.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore windows saved by `state_dict` (the ring position is free: it restarts at the buffer's end)."""
        rows = state["obs"].to(self.device).transpose(0, 1)
        self._newest = self.window - 1
        self._ring[: self.window, : self.num_envs] = rows
        self._ring[self.window :, : self.num_envs] = rows
