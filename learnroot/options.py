"""Plain option dataclasses shared by the science code and the config schema.

These dataclasses know nothing of Hydra or torch: science modules take them as arguments,
:mod:`learnroot.config` registers them as Hydra schemas, and the CLI is the only place that turns a
``DictConfig`` into instances of them. Every field has a default, so each class can also be built
by hand in tests and notebooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

ROOT_LOSSES = ("mse", "l1", "ssim", "hinge")
PIXEL_RULES = ("zb", "zplus", "wsquare", "flat", "epsilon", "gamma")
PF_BASELINES = ("zero", "black", "blur", "uniform")
OUTPUTS = ("logit", "abs_logit", "one")

#: Keys restricted to fixed names (the names of models, datasets and methods come from their
#: registries: :func:`learnroot.config.choices`).
CHOICES = {
    "dataset.on_error": ("skip", "fail"),
    "method.pixel_rule": PIXEL_RULES,
    "method.output": OUTPUTS,
    "method.target": ("label", "prediction"),
    "method.attention": ("cp", "softmax"),
    "root_opt.conv.loss": ROOT_LOSSES,
    "root_opt.dense.loss": ROOT_LOSSES,
    "root_opt.pixel.loss": ROOT_LOSSES,
    "root_opt.weights": ("plus", "all"),
    "root_opt.layers": ("all", "conv", "dense", "first_k"),
    "root_opt.pixel_layer": ("zb", "learned"),
    "metrics.pf_baseline": PF_BASELINES,
    "metrics.localisation": ("auto", "on", "off"),
}


def check_choice(key: str, value, allowed=None) -> None:
    """Raise ``ValueError`` ``"<key>=<value> is not one of: ..."`` unless ``value`` is allowed.

    Parameters
    ----------
    key : str
        Dotted config key, e.g. ``method.pixel_rule``.
    value
        The value to check.
    allowed : sequence, optional
        The allowed values; default :data:`CHOICES` ``[key]``.
    """
    allowed = CHOICES[key] if allowed is None else allowed
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of: {', '.join(map(str, allowed))}")


@dataclass
class ModelOptions:
    """Which classifier to explain and how its inputs are prepared.

    Attributes
    ----------
    name : str
        A registered model (:data:`learnroot.models.REGISTRY`).
    weights : str
        ``auto`` (small_cnn: train once and cache; torchvision models: the torch hub cache file),
        a path to a state-dict file, or ``random`` (smoke tests only; a warning is logged).
    num_classes : int
        Number of outputs; ``0`` means "take it from the dataset" (small_cnn).
    resize, crop : int
        Preprocessing: resize the shorter side to ``resize`` then centre-crop ``crop`` pixels.
        ``0`` disables the step (images are used at their own size).
    mean, std : list of float
        Per-channel normalisation applied after scaling pixels to ``value_range``.
    value_range : list of float
        ``[low, high]`` of raw pixel values before normalisation (``[0, 1]`` for images); the
        zB pixel box is this range mapped through the normalisation.
    train_epochs, train_lr, train_batch_size, train_seed : number
        Training of the embedded small CNN (ignored by the other models).
    """

    name: str = "small_cnn"
    weights: str = "auto"
    num_classes: int = 0
    resize: int = 0
    crop: int = 0
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    value_range: List[float] = field(default_factory=lambda: [0.0, 1.0])
    train_epochs: int = 12
    train_lr: float = 3e-3
    train_batch_size: int = 64
    train_seed: int = 0


@dataclass
class DatasetOptions:
    """Where the images come from.

    Attributes
    ----------
    name : str
        A registered dataset (:data:`learnroot.data.REGISTRY`). ``shapes`` is the embedded procedural benchmark (generated into
        the cache folder on first use); ``imagenet`` an ImageFolder tree of WordNet-id folders;
        ``imagenet_segmentation`` the ``gtsegs_ijcv.mat`` file of ImageNet-Segmentation;
        ``toy_points`` the seed's two-pixel points for the ``toy_sigmoid`` model.
    root : str, optional
        Folder (or file) holding the data. ``None`` for ``shapes`` means the cache folder.
    split : str
        Sub-folder of the shapes benchmark to explain (``val`` or ``train``).
    class_index : str, optional
        ``imagenet_class_index.json``-style file mapping output indices to WordNet ids.
    masks : str, optional
        Folder parallel to ``root`` with one mask PNG per image (same relative path, ``.png``).
    limit : int, optional
        Explain at most this many images, chosen deterministically with ``seed``.
    seed : int
        Seed of the subset selection (and of the shapes generator).
    on_error : str
        ``skip`` unreadable images (logged and counted) or ``fail`` on the first one.
    image_size, n_train, n_val : int
        Shapes benchmark: image side in pixels and images per class in each split.
    num_workers : int
        DataLoader worker processes.
    """

    name: str = "shapes"
    root: Optional[str] = None
    split: str = "val"
    class_index: Optional[str] = None
    masks: Optional[str] = None
    limit: Optional[int] = 32
    seed: int = 0
    on_error: str = "skip"
    image_size: int = 64
    n_train: int = 600
    n_val: int = 60
    num_workers: int = 0


@dataclass
class MethodOptions:
    """An attribution method and its rule parameters.

    Attributes
    ----------
    name : str
        A registered method (:data:`learnroot.methods.REGISTRY`).
    pixel_rule : str
        Rule at the first (pixel) layer for the rule-based methods, one of :data:`PIXEL_RULES`.
    epsilon : float
        LRP-epsilon stabiliser (paper: 0.25).
    gamma : float
        LRP-gamma weight (paper: 0.5).
    stabilizer : float
        Small constant keeping denominators away from zero.
    bias : bool
        Include biases in the redistribution (default: left out, see METHOD.md).
    ig_steps : int
        Integrated gradients: number of interpolation steps.
    montavon_split : list of float
        ``dtd_montavon``: fractions of depth (over the affine layers above the pixel layer) where
        the lower (gamma) block ends and the middle (epsilon) block ends; the rest and the dense
        head use LRP-0.
    output : str
        Relevance put on the target output: ``logit``, ``abs_logit`` or ``one``.
    target : str
        Which class to explain: ``label`` or ``prediction``.
    attention : str
        ``attnlrp`` on vision transformers: ``cp`` (the attention matrix is a constant, relevance
        flows through the values: CP-LRP, conserving) or ``softmax`` (AttnLRP's softmax and uniform
        matmul rules: relevance also reaches queries and keys; the softmax absorbs a share).
    """

    name: str = "dtd_zplus"
    pixel_rule: str = "zb"
    epsilon: float = 0.25
    gamma: float = 0.5
    stabilizer: float = 1e-6
    bias: bool = False
    ig_steps: int = 32
    montavon_split: List[float] = field(default_factory=lambda: [0.33, 0.67])
    output: str = "logit"
    target: str = "label"
    attention: str = "cp"


@dataclass
class LayerRootOptions:
    """Root optimisation of one layer type (conv, dense or pixel).

    Attributes
    ----------
    loss : str
        One of :data:`ROOT_LOSSES`: relevance-matching loss between the layer's response to the
        signal ``s = x - root`` and the relevance arriving from above.
    steps : int
        Gradient steps; ``0`` keeps the start point (root 0 on the z+ weights: the z+ rule).
    lr : float
        Step size.
    clip : float
        Element-wise gradient clip ``[-clip, clip]``; ``0`` disables clipping.
    """

    loss: str = "mse"
    steps: int = 5
    lr: float = 1.0
    clip: float = 1.0


@dataclass
class RootOptOptions:
    """Hyperparameters of the learned root (method ``ours``).

    Attributes
    ----------
    name : str
        Preset name (``default``, ``paper``, ...), for the record.
    conv, dense, pixel : LayerRootOptions
        Per layer type settings; ``pixel`` is used only with ``pixel_layer: learned``.
    weights : str
        ``plus`` (``w+``, the z+ family) or ``all`` (``w``).
    project : bool
        Project the signal back onto the admissible set after every step.
    normalise : bool
        Redistribute with the normalised rule ``s * W'(R / W'^T s)`` (conserves exactly);
        otherwise with the first-order Taylor term ``s * W'(R / W'^T x)``.
    layers : str
        Which affine layers use the learned root: ``all``, ``conv``, ``dense`` or ``first_k``
        (the ``k`` affine layers the relevance reaches first, i.e. nearest the output).
    k : int
        Used with ``layers: first_k``.
    pixel_layer : str
        ``zb`` (keep the zB rule at the pixel layer) or ``learned``.
    softmax : bool
        Compare softmax-normalised response and relevance (over space for conv maps, over
        features for dense layers), as the paper's code does.
    paper_quirks : bool
        Reproduce the paper code's choices: descend on SSIM itself rather than ``1 - SSIM`` and feed
        raw relevances as the +-1 targets of the hinge-embedding loss.
    stabilizer : float
        Keeps the redistribution's denominators away from zero.
    """

    name: str = "default"
    conv: LayerRootOptions = field(default_factory=LayerRootOptions)
    dense: LayerRootOptions = field(default_factory=LayerRootOptions)
    pixel: LayerRootOptions = field(default_factory=LayerRootOptions)
    weights: str = "plus"
    project: bool = True
    normalise: bool = True
    layers: str = "all"
    k: int = 0
    pixel_layer: str = "zb"
    softmax: bool = False
    paper_quirks: bool = False
    stabilizer: float = 1e-6


@dataclass
class MetricsOptions:
    """Which evaluation metrics every run computes.

    Attributes
    ----------
    pixel_flipping : bool
        MoRF and LeRF pixel flipping.
    pf_steps : int
        Number of equal steps from 0 to 100 % of the pixels removed.
    pf_baseline : str
        Replacement value, one of :data:`PF_BASELINES`.
    pf_blur_sigma : float
        Gaussian sigma (pixels) of the ``blur`` baseline.
    pf_chunk : int
        Perturbed images per forward pass.
    perturbation : bool
        Positive / negative perturbation (Chefer et al. 2021).
    perturbation_fractions : list of float
        Fractions removed, each from the clean image.
    localisation : str
        ``auto`` (when the dataset has masks), ``on`` (error without masks) or ``off``.
    conservation : bool
        Global and layer-wise conservation errors.
    cost : bool
        Seconds per image and peak memory.
    seed : int
        Seed of random baselines.
    """

    pixel_flipping: bool = True
    pf_steps: int = 20
    pf_baseline: str = "zero"
    pf_blur_sigma: float = 5.0
    pf_chunk: int = 256
    perturbation: bool = True
    perturbation_fractions: List[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    localisation: str = "auto"
    conservation: bool = True
    cost: bool = True
    seed: int = 0


@dataclass
class PathsOptions:
    """Where runs are written and where cached data and weights live.

    Attributes
    ----------
    output_root : str
        Parent of ``runs/`` and ``sweeps/`` (env ``LEARNROOT_OUTPUT_ROOT``).
    cache_dir : str
        The embedded benchmark and its trained CNN (env ``LEARNROOT_CACHE``).
    """

    output_root: str = "outputs"
    cache_dir: str = "~/.cache/learnroot"


@dataclass
class RunOptions:
    """One ``learnroot-run`` invocation.

    Attributes
    ----------
    batch_size : int
        Images per batch (attribution and evaluation).
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    seed : int
        Seed of everything random in the run.
    save_heatmaps, save_relevance : bool
        Write ``heatmaps/*.png`` and ``relevance/*.npz``.
    resume : str, optional
        Run folder to complete (its saved config is used).
    """

    model: ModelOptions = field(default_factory=ModelOptions)
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    method: MethodOptions = field(default_factory=MethodOptions)
    root_opt: RootOptOptions = field(default_factory=RootOptOptions)
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    paths: PathsOptions = field(default_factory=PathsOptions)
    batch_size: int = 8
    device: str = "auto"
    seed: int = 0
    save_heatmaps: bool = True
    save_relevance: bool = True
    resume: Optional[str] = None
