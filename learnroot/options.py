"""Plain option dataclasses shared by the science code and the config schema.

These dataclasses know nothing of Hydra or torch: science modules take them as arguments,
:mod:`learnroot.config` registers them as Hydra schemas, and the CLI is the only place that turns a
``DictConfig`` into instances of them. Every field has a default, so each class can also be built
by hand in tests and notebooks; the defaults *are* the default presets of ``conf/`` (a test composes
each group's default preset and compares it with the dataclass), so there is one source of truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

ROOT_LOSSES = ("mse", "l1", "ssim", "hinge", "cosine", "kl")
PIXEL_RULES = ("zb", "zplus", "wsquare", "flat", "epsilon", "gamma", "alpha_beta")
POOL_RULES = ("norm", "epsilon", "flat")
ZPLUS_FALLBACKS = ("wsquare", "none")
#: Depths of the CIFAR-10 ResNets (``6 n + 2``, n basic blocks per stage).
CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)
PF_BASELINES = ("zero", "black", "blur", "uniform")
PF_SCHEDULES = ("linear", "log")
#: ``dataset.part``: every sample, or one of the disjoint parts chosen by a hash of the sample id
#: (:func:`learnroot.data.folder.split_part`; ``train`` only with ``dataset.train_share > 0``).
DATASET_PARTS = ("all", "tune", "test", "train")
OUTPUTS = ("logit", "abs_logit", "one")

#: Keys restricted to fixed names (the names of models, datasets and methods come from their
#: registries: :func:`learnroot.config.choices`).
CHOICES = {
    "dataset.on_error": ("skip", "fail"),
    "dataset.part": DATASET_PARTS,
    "method.pixel_rule": PIXEL_RULES,
    "method.pool_rule": POOL_RULES,
    "method.zplus_fallback": ZPLUS_FALLBACKS,
    "method.output": OUTPUTS,
    "method.target": ("label", "prediction"),
    "method.attention": ("cp", "softmax"),
    "root_opt.conv.loss": ROOT_LOSSES,
    "root_opt.dense.loss": ROOT_LOSSES,
    "root_opt.pixel.loss": ROOT_LOSSES,
    "root_opt.weights": ("plus", "all"),
    "root_opt.layers": ("all", "conv", "dense", "first_k"),
    "root_opt.pixel_layer": ("zb", "learned"),
    "root_opt.step": ("additive", "relative"),
    "root_opt.tol_mode": ("stop", "extrapolate"),
    "root_opt.control": ("none", "threshold", "shuffled", "uniform"),
    "metrics.pf_baseline": PF_BASELINES,
    "metrics.pf_schedule": PF_SCHEDULES,
    "metrics.aopc_baseline": PF_BASELINES,
    "metrics.localisation": ("auto", "on", "off"),
    "metrics.attack_norm": ("linf", "l2"),
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
        ``auto`` (small_cnn: the weights shipped with the package for the default benchmark, else
        trained once and cached; torchvision models: the torch hub cache file), a path to a
        state-dict file, or ``random`` (smoke tests only; a warning is logged).
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
    pad : int
        Pixels added on each side after the crop, with the lowest value (``value_range[0]``, e.g.
        black), as LeNet-5 pads 28 x 28 MNIST digits to 32 x 32. ``0``: no padding. The number of
        channels is ``len(mean)`` (1: images are read as grayscale).
    depth : int
        Depth of the CIFAR ResNet (``model=cifar_resnet``), one of :data:`CIFAR_RESNET_DEPTHS`;
        ignored by the other models.
    train_epochs, train_lr, train_batch_size, train_seed, train_target_accuracy : number
        Training of the embedded small CNN (ignored by the other models): at most
        ``train_epochs`` epochs, stopping once the validation accuracy reaches
        ``train_target_accuracy``.
    """

    name: str = "small_cnn"
    weights: str = "auto"
    num_classes: int = 0
    resize: int = 0
    crop: int = 0
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    value_range: List[float] = field(default_factory=lambda: [0.0, 1.0])
    pad: int = 0
    depth: int = 0
    train_epochs: int = 8
    train_lr: float = 3e-3
    train_batch_size: int = 64
    train_seed: int = 0
    train_target_accuracy: float = 0.98


@dataclass
class DatasetOptions:
    """Where the images come from.

    Attributes
    ----------
    name : str
        A registered dataset (:data:`learnroot.data.REGISTRY`). ``shapes`` is the embedded procedural benchmark (generated into
        the cache folder on first use); ``imagenet`` an ImageFolder tree of WordNet-id folders;
        ``imagenet_segmentation`` the ``gtsegs_ijcv.mat`` file of ImageNet-Segmentation;
        ``toy_points`` the seed's two-pixel points for the ``toy_sigmoid`` model; ``mnist`` the
        MNIST IDX files; ``cifar10`` CIFAR-10 class folders or pickle batches; ``coco_seg`` COCO
        photos with YOLO segmentation labels, explained by an ImageNet model.
    root : str, optional
        Folder (or file) holding the data. ``None`` for ``shapes`` means the cache folder.
    split : str
        Which part to explain: ``val`` or ``train`` (shapes), ``test`` or ``train`` (mnist,
        cifar10), the ``images/`` sub-folder (coco_seg, e.g. ``train2017``).
    class_index : str, optional
        ``imagenet_class_index.json``-style file mapping output indices to WordNet ids.
    masks : str, optional
        Folder parallel to ``root`` with one mask PNG per image (same relative path, ``.png``).
    part : str
        ``all`` samples, or the ``tune`` part (about 30 %: for choosing hyperparameters) or the
        ``test`` part (the other 70 %: for reporting) of the dataset's sample list, split by a hash
        of each sample's id (:func:`learnroot.data.folder.split_part`): the parts are disjoint and a
        sample stays in its part when the folder grows. Applied before ``limit``. ``train``: the
        part a model is trained on, only with ``train_share > 0``.
    train_share : float
        Share of the hash range cut out as a ``train`` part between the tune part and the test part
        (``[0.3, 0.3 + train_share)``; the test part keeps the rest), for models trained on the
        dataset's own images (the real-data ViTs: 0.6, so tune 30 %, train 60 %, test 10 %). ``0``
        (default): no train part, the tune and test parts are 30 % / 70 %. In ``[0, 0.7)``.
    limit : int, optional
        Explain at most this many images (of the part; at least 1, ``None``: all), chosen deterministically
        with ``seed``.
    seed : int
        Seed of the subset selection (and of the shapes generator).
    on_error : str
        ``skip`` unreadable images (logged and counted) or ``fail`` on the first one.
    image_size, n_train, n_val : int
        Shapes benchmark: image side in pixels and images per class in each split.
    num_workers : int
        DataLoader worker processes.
    min_area : float
        ``coco_seg``: set aside images whose explained object covers less than this fraction of
        the image (0: keep every image with a mapped object).
    """

    name: str = "shapes"
    root: Optional[str] = None
    split: str = "val"
    class_index: Optional[str] = None
    masks: Optional[str] = None
    part: str = "all"
    train_share: float = 0.0
    limit: Optional[int] = 32
    seed: int = 0
    on_error: str = "skip"
    image_size: int = 64
    n_train: int = 600
    n_val: int = 60
    num_workers: int = 0
    min_area: float = 0.0


@dataclass
class MethodOptions:
    """An attribution method and its rule parameters.

    Attributes
    ----------
    name : str
        A registered method (:data:`learnroot.methods.REGISTRY`).
    pixel_rule : str
        Rule at the first (pixel) layer for the rule-based methods, one of :data:`PIXEL_RULES`.
    pool_rule : str
        Rule of the average (and sum) pooling layers, one of :data:`POOL_RULES`: ``norm`` splits a
        window's relevance in proportion to its inputs (zennit ``Norm``, stabiliser
        ``stabilizer``); ``epsilon`` does the same with ``epsilon`` added to the window's sum of
        inputs (the pooling layer as a linear layer of unit weights with LRP-epsilon, as the LRP
        Toolbox does for sum pooling); ``flat`` splits it equally (LRP-flat and w^2 of a pooling
        layer, whose weights are equal).
    epsilon : float
        LRP-epsilon stabiliser (paper: 0.25).
    gamma : float
        LRP-gamma weight (paper: 0.5).
    zplus_fallback : str
        z+ and the learned root: what becomes of the relevance of a neuron without any positive
        contribution (its z+ denominator is exactly 0; e.g. a MobileNetV2 depthwise filter whose
        weights are all non-positive, active through a positive merged BatchNorm bias): ``wsquare``
        redistributes it by the w^2 rule over the neuron's inputs, ``none`` drops it (zennit's
        behaviour). Neurons with a positive contribution are not affected.
    alpha, beta : float
        LRP-alpha-beta weights of the positive and negative contributions, ``alpha - beta = 1``,
        both >= 0 (``lrp_alpha_beta``, ``pixel_rule=alpha_beta``).
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

    name: str = "ours"
    pixel_rule: str = "zb"
    pool_rule: str = "norm"
    zplus_fallback: str = "wsquare"
    epsilon: float = 0.25
    gamma: float = 0.5
    alpha: float = 2.0
    beta: float = 1.0
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
        Most descent steps; ``0`` keeps the start point (root 0 on the z+ weights: the z+ rule).
    lr : float
        Step size: in the layer input's units per unit of gradient (``step: additive``), or the
        largest fraction of an input that one step removes (``step: relative``).
    clip : float
        Element-wise gradient clip ``[-clip, clip]`` of the additive step; ``0`` disables clipping.
    """

    loss: str = "cosine"
    steps: int = 3
    lr: float = 1.0
    clip: float = 0.0


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
    step : str
        ``additive``: ``s <- P(s - lr clip(grad))``, in the input's units (the paper's code);
        ``relative``: the signal is ``s = m x`` with ``m`` in ``[0, 1]`` and each step moves ``m`` by
        ``lr`` times the gradient divided by its largest magnitude in the sample (scale-free).
    tol : float
        Stop the descent early once no sample's signal moves by more than ``tol`` (relative, in the
        max norm) in a step; ``0`` takes every step.
    tol_mode : str
        What the descent does once a step moved no signal by more than ``tol``: ``stop``, or
        ``extrapolate`` (take the steps left as repeats of that step, in one move, then stop: the
        plain descent's result whenever the gradient stays constant over those steps).
    control : str
        Controls that keep the method honest: ``none``; ``threshold`` (no descent: the root that the
        additive MSE descent reaches when every gradient is clipped, ``s = P(x - steps lr clip)``);
        ``shuffled`` (the same descent, matching a random permutation of the relevance within the
        layer); ``uniform`` (matching a constant relevance).
    control_seed : int
        Seed of the ``shuffled`` permutations.
    negative_steps : int, optional
        Vision transformers (``ours`` in Chefer's propagation): descent steps of the negative-input
        branch of every Linear rule; ``None``: ``dense.steps``, as the positive-input branch. The
        paper's ViT code takes 1 step on the positive branch and 50 on the negative one
        (``root_opt=paper_vit``).
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
    step: str = "relative"
    tol: float = 0.0
    tol_mode: str = "stop"
    control: str = "none"
    control_seed: int = 0
    negative_steps: Optional[int] = None


@dataclass
class MetricsOptions:
    """Which evaluation metrics every run computes.

    Attributes
    ----------
    pixel_flipping : bool
        MoRF and LeRF pixel flipping.
    pf_steps : int
        Number of steps from 0 to 100 % of the pixels removed.
    pf_schedule : str
        ``linear``: equal steps (Samek et al. 2017; the default, as in earlier results); ``log``:
        fractions spaced geometrically from ``pf_log_start`` to 100 %, AUC over the normalised log
        axis, so early removals weigh as much as late ones (:mod:`learnroot.metrics.flipping`).
    pf_log_start : float
        Fraction removed at the first step of the ``log`` schedule (at least one pixel).
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
    aopc : bool
        Region perturbation (Samek et al. 2017): AOPC of patches removed in MoRF, LeRF and random
        order (:mod:`learnroot.metrics.region`); ``3 x aopc_steps`` forward passes per sample.
    aopc_patch : int
        Side of the square patches in pixels; ``0``: ``round(9 * H / 224)``, at least 1 (Samek's
        9 x 9 regions at 224 px; 3 at 64 px; 1 at 28 or 32 px).
    aopc_steps : int
        Number of perturbation steps ``L``.
    aopc_fraction : float
        Fraction of the patches removed at step ``L`` (Samek: 100 of 625 regions, 16 %).
    aopc_baseline : str
        Replacement of the removed patches, one of :data:`PF_BASELINES` (Samek: ``uniform`` noise).
    aopc_seed : int
        Seed of the random order (combined with each sample's id).
    aopc_draws : int
        Uniform-noise draws averaged per sample (``aopc_baseline=uniform``): the removed patches take
        fresh noise per sample, step and draw, seeded by ``seed``, the sample id, the step and the draw
        (:mod:`learnroot.metrics.region`); ``aopc_draws`` times the forward passes. The default 6 brings
        the noise SD of a LeNet-5 image's AOPC (0.82 for one draw) below the spread of its paired
        differences between methods (0.36; docs/METHOD.md section 3).
    localisation : str
        ``auto`` (when the dataset has masks), ``on`` (error without masks) or ``off``.
    conservation : bool
        Global and layer-wise conservation errors.
    cost : bool
        Seconds per image and peak memory.
    seed : int
        Seed of random baselines (and of the attack's random ranking and the randomised weights).
    attack : bool
        Explanation-guided sparse attack (:mod:`learnroot.metrics.attack`): perturb the ``attack_k``
        top-ranked positions by gradient steps until the label flips.
    attack_k : int
        Positions perturbed per step at 224 x 224 pixels; scaled with the image area,
        ``max(1, round(attack_k * H * W / 224^2))`` (the paper: 500).
    attack_norm : str
        ``linf`` (sign steps, box ``|delta| <= epsilon`` per value) or ``l2`` (steps along the
        L2-normalised gradient, ball ``||delta||_2 <= epsilon`` over the image).
    attack_epsilon : float, optional
        Perturbation budget as a fraction of the raw value range ``model.value_range`` (the paper:
        0.05 on its [-1, 1] scale, i.e. 0.025); ``None``: no budget (the paper's default L2 attack as
        its code runs: it never applies its projection).
    attack_step : float
        Length of one step in the same units (``linf``: per value; ``l2``: of the step).
    attack_steps : int
        Most steps (the paper: 30).
    attack_reexplain : bool
        Explain the perturbed image again before every step (the paper) or rank once, on the clean image.
    attack_random : bool
        Run the same attack with a random ranking of the positions as a control.
    signal_noise : bool
        Signal / root test (:mod:`learnroot.metrics.signal_noise`): ``f_c(x - r)`` and ``f_c(r)`` for a
        method with one pixel-level root ``r``.
    class_sensitivity : bool
        Explain a second class and compare the maps (:mod:`learnroot.metrics.class_sensitivity`).
    class_other : int
        The second class: ``-1`` the best-scoring class other than the explained one (on multi-object
        datasets: the second object's class), or a fixed output index.
    randomisation : bool
        Cascading model parameter randomisation (:mod:`learnroot.metrics.randomisation`).
    randomisation_layers : int
        Randomise this many Linear/Conv layers from the top, one more per step; ``0``: all of them.
        On a vision transformer the units are the patch embedding, each block and the head.
    """

    pixel_flipping: bool = True
    pf_steps: int = 20
    pf_schedule: str = "linear"
    pf_log_start: float = 0.001
    pf_baseline: str = "zero"
    pf_blur_sigma: float = 5.0
    pf_chunk: int = 256
    perturbation: bool = True
    perturbation_fractions: List[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    aopc: bool = False
    aopc_patch: int = 0
    aopc_steps: int = 20
    aopc_fraction: float = 0.2
    aopc_baseline: str = "uniform"
    aopc_seed: int = 0
    aopc_draws: int = 6
    localisation: str = "auto"
    conservation: bool = True
    cost: bool = True
    seed: int = 0
    attack: bool = False
    attack_k: int = 500
    attack_norm: str = "linf"
    attack_epsilon: Optional[float] = 0.025
    attack_step: float = 0.005
    attack_steps: int = 30
    attack_reexplain: bool = True
    attack_random: bool = True
    signal_noise: bool = False
    class_sensitivity: bool = False
    class_other: int = -1
    randomisation: bool = False
    randomisation_layers: int = 0


@dataclass
class PathsOptions:
    """Where runs are written and where cached data and weights live.

    Attributes
    ----------
    output_root : str
        Parent of ``runs/`` and ``sweeps/`` (env ``LEARNROOT_OUTPUT_ROOT``).
    cache_dir : str
        The embedded benchmark and its trained CNN (env ``LEARNROOT_CACHE``).
    shared_data : str
        The folder of real weights and images that the ``setup`` presets read (env
        ``LEARNROOT_SHARED_DATA``; its layout: ``weights/``, ``mnist/``, ``cifar10/``,
        ``imagenet-samples/``, ``coco128-seg/``).
    """

    output_root: str = "outputs"
    cache_dir: str = "~/.cache/learnroot"
    shared_data: str = "../shared/data"


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
    save_layers : list of str
        Module names (``model.named_modules()``) whose input relevance, summed over channels, is
        also written into ``relevance/<id>.npz`` (as ``layer_<name>``); rule-based methods only.
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
    save_layers: List[str] = field(default_factory=list)
    resume: Optional[str] = None
