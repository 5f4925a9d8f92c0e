"""Typed training configuration, loaded from plain JSON files in ``training/configs/``.

Why dataclasses + JSON: the config is data (diffable, stored verbatim in the checkpoint and the
model manifest), and the dataclasses give one place where every knob, its type and its default
live. Unknown keys are an error so that a typo never silently trains the wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common.config import ConfigFormat


@dataclass
class Effects:
    """Simulator effects, each switchable (the robustness table toggles them one at a time)."""

    redshift: bool = True  # off: every object at rest (z = 0)
    resolution: bool = True  # instrumental line-spread function of the survey
    noise: bool = True  # photon + sky noise at the drawn S/N (off: S/N 1000)
    sky_residuals: bool = True  # imperfect sky subtraction at bright sky lines
    outliers: bool = True  # cosmic-ray-like spikes not caught by the mask
    masks: bool = True  # masked pixels and bad columns
    fluxcal: bool = True  # smooth multiplicative flux-calibration errors
    telluric: bool = True  # O2 A/B bands and H2O residuals
    dust: bool = True  # Galactic (CCM) + internal (Calzetti galaxies, SMC quasars) reddening
    velocity_dispersion: bool = True  # galaxy stellar velocity dispersion, star rotation
    line_strength: bool = True  # random emission-line strengths (galaxies and quasars)
    qso_slopes: bool = True  # quasar continuum-slope variation
    host_galaxy: bool = True  # host-galaxy light under low-z quasars
    lya_forest: bool = True  # Lyα forest + Lyβ + Lyman limit with line-of-sight scatter
    bal: bool = True  # broad absorption-line troughs in a fraction of quasars
    weak_line: bool = True  # weak-line quasars (lines suppressed)
    absorbers: bool = True  # intervening DLAs and Lyman-limit systems in front of quasars
    dichroic: bool = True  # flux mismatch + extra noise where spectrograph arms overlap


@dataclass
class SimConfig:
    surveys: dict[str, float] = field(
        default_factory=lambda: {"sdss": 0.3, "boss": 0.3, "desi": 0.25, "4most-lrs": 0.15}
    )
    class_fractions: dict[str, float] = field(
        default_factory=lambda: {"GALAXY": 0.34, "QSO": 0.33, "STAR": 0.33}
    )
    snr_min: float = 1.0  # median S/N per model-grid pixel (Δlog10λ = 1e-4)
    snr_max: float = 50.0
    faint_fraction: float = 0.15  # extra mass at the faint end: S/N in [snr_min, faint_snr_max]
    faint_snr_max: float = 3.0
    galaxy_z_max: float = 1.0
    # Galaxy populations across the BPT plane (training/spectra/galaxies.py says where each sits).
    galaxy_populations: dict[str, float] = field(
        default_factory=lambda: {"passive": 0.22, "e+a": 0.08, "star-forming": 0.3,
                                 "starburst": 0.16, "seyfert2": 0.12, "liner": 0.12}
    )
    nearby_fraction: float = 0.08  # galaxies at z log-uniform on nearby_z_min–nearby_z_max
    nearby_z_min: float = 0.001
    nearby_z_max: float = 0.03
    qso_z_max: float = 5.0
    qso_real_z_fraction: float = 0.7  # draw from the 568 BOSS redshifts (jittered), else uniform
    bal_fraction: float = 0.12
    weak_line_fraction: float = 0.05
    qso_reddened_fraction: float = 0.1  # SMC E(B−V) 0.1–0.5
    dla_fraction: float = 0.15  # of quasars with an observable DLA range (z ≳ 2.1)
    lls_rate: float = 1.0  # × the observed Lyman-limit-system incidence ℓ(z)
    redrock_star_fraction: float = 0.5  # stars from Redrock archetypes where they exist
    effects: Effects = field(default_factory=Effects)


@dataclass
class DataConfig:
    n_train: int = 40000
    n_val: int = 4000  # temperature scaling + early checks (held out from training)
    n_test: int = 6000
    n_robust: int = 800  # per robustness variant
    workers: int = 2


@dataclass
class ModelConfig:
    widths: list[int] = field(default_factory=lambda: [16, 24, 32, 48, 64])
    stem_channels: int = 16
    stem_kernel: int = 8
    stem_stride: int = 4
    kernel: int = 5
    head_hidden: int = 64
    dropout: float = 0.1


@dataclass
class TrainConfig:
    members: int = 3
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    z_loss_weight: float = 1.0
    beta_nll: float = 0.5  # β-NLL (Seitzer et al. 2022): keeps hard redshifts in the loss
    label_smoothing: float = 0.0
    max_steps: int = 0  # > 0: stop each member after this many steps (CI)
    # > 0: wall-clock limit of one session; then every member checkpoints and the run exits,
    # to be continued with `specula train spectra --resume RUN_DIR` (the schedule is by steps)
    time_budget_s: float = 0.0
    session_epochs: int = 0  # > 0: also pause after this many epochs per member per session
    patience: int = 0  # > 0: stop a member after this many epochs without a better val loss
    min_delta: float = 0.0  # an improvement smaller than this does not count
    checkpoint_every_s: float = 600.0  # mid-epoch checkpoints (end of each epoch always)
    parallel_members: bool = False  # one single-threaded process per member
    threads: int = 2


@dataclass
class EvalConfig:
    baseline_n: int = 600  # spectra the chi-square template-fitting baseline runs on
    bench_batch: int = 256
    bench_repeats: int = 5


@dataclass
class Config:
    name: str = "spectrum_classifier"
    version: int = 1
    seed: int = 0
    sim: SimConfig = field(default_factory=SimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CONFIG_FORMAT = ConfigFormat(Config)
config_from_dict = CONFIG_FORMAT.from_dict
load_config = CONFIG_FORMAT.load
config_to_dict = CONFIG_FORMAT.to_dict
