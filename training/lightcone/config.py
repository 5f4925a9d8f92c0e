"""Typed configuration for the lightcone task, loaded from plain JSON (``configs/*.json``).

Same rules as ``training.spectra.config``: the config is data (stored verbatim in the dataset, the
checkpoint and the manifest), every knob has one typed default here, and unknown keys are an
error. The parameter priors live here too, because they are part of the model's contract
(outputs are normalised by them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.lightcones import LightconeGrid

from ..common.config import ConfigFormat


@dataclass
class Prior:
    """A uniform prior on one inferred parameter, in the units the model reports."""

    key: str  # the 21cmFAST v4 parameter it sets
    low: float
    high: float
    unit: str
    description: str


def default_priors() -> dict[str, dict[str, Any]]:
    # 21cmPIE-Net's ranges (Neutsch, Heneka & Brüggen 2022), minus m_WDM (see simulate.py).
    return {
        "OMm": {"key": "OMm", "low": 0.2, "high": 0.4, "unit": "",
                "description": "matter density Ω_m"},
        "L_X": {"key": "L_X", "low": 38.0, "high": 42.0, "unit": "log10(erg s^-1 M_sun^-1 yr)",
                "description": "soft-band X-ray luminosity per star-formation rate, log10"},
        "NU_X_THRESH": {"key": "NU_X_THRESH", "low": 100.0, "high": 1500.0, "unit": "eV",
                        "description": "E_0, minimum X-ray energy escaping the galaxies"},
        "ION_Tvir_MIN": {"key": "ION_Tvir_MIN", "low": 4.0, "high": 5.3, "unit": "log10(K)",
                         "description": "T_vir, minimum virial temperature of star-forming "
                                        "haloes, log10"},
        "HII_EFF_FACTOR": {"key": "HII_EFF_FACTOR", "low": 10.0, "high": 250.0, "unit": "",
                           "description": "ζ, ionising efficiency"},
    }


@dataclass
class SimConfig:
    templates: list[str] = field(default_factory=lambda: ["const-zeta", "size-tiny"])
    hii_dim: int = 16  # 4 Mpc cells: the model grid's sky resolution (see docs/lightcones.md)
    box_len: float = 64.0
    hires_factor: int = 2  # DIM = hires_factor · HII_DIM for the initial conditions
    use_ts_fluct: bool = True  # without it L_X and E_0 leave no trace in the signal
    n_step_ts: int = 20
    z_min: float = 5.5
    z_max: float = 19.0
    priors: dict[str, dict[str, Any]] = field(default_factory=default_priors)
    tau_max: float = 0.089  # 21cmPIE-Net's cut (Planck τ + ~3σ)
    xhi_lowz_max: float = 0.1  # reionisation (nearly) complete at the low-z end
    threads_per_sim: int = 1


@dataclass
class GridConfig:
    """The model grid (service.lightcones.LightconeGrid) and the dataset's nested finer grid."""

    n_xy: int = 16
    cell_mpc: float = 4.0
    n_los: int = 128
    nu_min_mhz: float = 75.0  # z ≈ 17.9
    nu_max_mhz: float = 200.0  # z ≈ 6.1
    scale_mk: float = 100.0
    dataset_los_refine: int = 2  # dataset stores 2× finer line of sight (exactly nested)
    # service.lightcones.preprocess version the model is trained with (and the service runs)
    preprocess_version: str = "lightcone-1"

    def model_grid(self) -> LightconeGrid:
        return LightconeGrid(self.n_xy, self.cell_mpc, self.n_los, self.nu_min_mhz,
                             self.nu_max_mhz, self.scale_mk)

    def dataset_grid(self) -> LightconeGrid:
        return self.model_grid().refine(1, self.dataset_los_refine)


@dataclass
class DataConfig:
    n_sims: int = 2000  # simulations attempted (accepted ones form the dataset)
    workers: int = 2
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    file: str = ""  # "" = data/lightcones-v<DATASET_VERSION>-<config hash>.h5


@dataclass
class NoiseConfig:
    """SKA1-Low thermal noise + foreground-wedge removal (tools21cm): the noisy evaluation and,
    with ``train``, fresh noise realisations added to every training batch."""

    obs_time_h: float = 1000.0
    subarray: str = "AA4"
    total_int_time_h: float = 6.0  # hours tracked per day
    int_time_s: float = 600.0  # visibility integration; coarser than tools21cm's 10 s default
    declination_deg: float = -30.0
    n_uv_redshifts: int = 12  # uv coverage computed here, nearest used per channel (the slow part)
    # foreground-wedge removal, done on cubic comoving cells (noise.wedge_remove); off because
    # at this resolution it leaves almost no signal (docs/lightcones.md, "Foreground wedge")
    wedge: bool = False
    wedge_omm: float = 0.31  # fiducial Ω_m for the channel distances (an observer's choice)
    seed: int = 1
    evaluate: bool = True  # also report the test metrics on noisy cubes
    train: bool = False  # add fresh thermal noise to every training batch (and to validation)
    # [lo, hi] hours: each training/validation cube's observing time drawn log-uniform in it
    # (noise ∝ 1/√t), so the model is not tied to one noise level; [] = always obs_time_h
    train_obs_time_range_h: list[float] = field(default_factory=list)
    eval_realisations: int = 4  # noise draws per test cube in the noisy evaluation
    val_realisations: int = 4  # noise draws per validation cube (early stopping, σ calibration)
    # R² of the trained model at other observing times (noise ∝ 1/√t); [] = skip
    eval_obs_times_h: list[float] = field(default_factory=list)


@dataclass
class ModelConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 48, 64])
    head_hidden: int = 64
    dropout: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True  # periodic rolls, flips and transposes of the two sky axes
    max_steps: int = 0  # > 0: stop after this many steps (CI)
    # > 0: stop after this many seconds of training (a time box on a shared machine; the best
    # epoch so far is kept, the history records it) — makes the run depend on machine speed
    max_seconds: float = 0.0
    # > 0: wall-clock limit of one session; the run checkpoints at the end of the epoch that
    # crosses it and is continued by `specula train lightcone --resume RUN_DIR` (the schedule
    # is by steps, so a resumed run takes the same steps as an uninterrupted one)
    session_seconds: float = 0.0
    threads: int = 2
    patience: int = 15  # epochs without val improvement before stopping
    # the σ calibration may only widen σ: with a handful of validation cubes a fitted shrink
    # factor is mostly noise (v1: 0.47 for L_X from 8 cubes → 38% test coverage at 68%)
    min_sigma_scale: float = 1.0


@dataclass
class LightconeConfig:
    name: str = "lightcone_regressor"
    version: int = 1
    seed: int = 0
    sim: SimConfig = field(default_factory=SimConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # shipped model directories (relative to the repository) evaluated on the same test cubes
    # and noise draws, each with its own preprocessing, for the report's comparison tables
    compare: list[str] = field(default_factory=list)

    @property
    def param_names(self) -> list[str]:
        return list(self.sim.priors)

    def priors(self) -> list[Prior]:
        return [Prior(**self.sim.priors[n]) for n in self.param_names]


CONFIG_FORMAT = ConfigFormat(LightconeConfig)
config_from_dict = CONFIG_FORMAT.from_dict
load_config = CONFIG_FORMAT.load
config_to_dict = CONFIG_FORMAT.to_dict
