"""The bits of a spectrum model's ``z_warning`` output: what each one means.

Part of the spectrum model contract (models/README.md), so it lives with the other parts
that training and the service share (the grid, the preprocessing): a model with an in-graph
template fit sets these bits (training/spectra/redshift_graph.py builds the graph from them) and the
service names them (service.inference.postprocess, quality); a pipeline routes on them as
it routes on SDSS's ZWARNING.
"""

from __future__ import annotations

Z_WARNING_BITS: dict[int, str] = {
    1: "z_ambiguous",  # a second, separate χ² minimum within Δχ² < 9
    2: "z_poor_fit",  # χ²/dof of the template fit above the poor-fit threshold
    4: "z_no_fit",  # no template fit (STAR: z is the z = 0 prior)
    8: "z_no_signal",  # the best template fit explains no more than noise would
}
Z_WARNING_BIT: dict[str, int] = {name: bit for bit, name in Z_WARNING_BITS.items()}
# "1 z_ambiguous, 2 z_poor_fit, ...": for the field and column descriptions
Z_WARNING_TEXT = ", ".join(f"{bit} {name}" for bit, name in Z_WARNING_BITS.items())


def z_warning_names(bits: int) -> list[str]:
    return [name for bit, name in Z_WARNING_BITS.items() if bits & bit]
