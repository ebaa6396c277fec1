"""Typed schema of ``params.yaml``: each stage loads and validates only the sections it reads.

Validation happens before a stage touches anything: an unknown key, a wrong type, a value out of
range or a method name that is not registered raises ``ParamsError`` with one line naming the key,
the value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from .errors import ParamsError


def _registered(registry_loader: Callable[[], dict], what: str):
    """Field validator: the value must be a key of the registry that ``registry_loader`` returns."""

    def check(value: str) -> str:
        names = sorted(registry_loader())
        if value not in names:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(names)}")
        return value

    return check


def _datasets():
    from .data import DATASETS

    return DATASETS


def _pretrain_methods():
    from .pretrain import METHODS, NO_PRETRAINING

    return [*METHODS, NO_PRETRAINING]


def _backbones():
    from .models import BACKBONES

    return BACKBONES


def _extractors():
    from .features import EXTRACTORS

    return EXTRACTORS


def _cluster_methods():
    from .clustering import METHODS

    return METHODS


def _finetune_methods():
    from .finetune import METHODS

    return METHODS


def _augmentations():
    from .augment import PRESETS

    return PRESETS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Device = Literal["auto", "cpu", "cuda", "mps"]
Int = Annotated[int, Strict()]  # YAML gives real integers; refuse `true` or 2.5 where a count is meant


class DataParams(Section):
    name: str = "digits"
    root: Optional[str] = None
    download_dir: str = "data/raw"
    splits: Optional[list[str]] = Field(None, min_length=1)
    train_splits: list[str] = Field(default_factory=lambda: ["train"], min_length=1)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    max_per_split: Optional[Int] = Field(None, ge=1)
    image_size: Optional[Int] = Field(None, ge=4, le=4096)
    channels: Optional[Literal[1, 3]] = None
    label_column: str = "label"
    max_image_pixels: Int = Field(89_478_485, ge=1)  # Pillow's own decompression-bomb limit
    checksum: Optional[str] = None  # md5:HEX or sha256:HEX of the archive data.root names

    @field_validator("checksum")
    @classmethod
    def _checksum(cls, value):
        lengths = {"md5": 32, "sha256": 64}
        algorithm, _, digest = (value or "").partition(":")
        if value is not None and not (algorithm in lengths and re.fullmatch(f"[0-9a-fA-F]{{{lengths[algorithm]}}}",
                                                                            digest)):
            raise ValueError("must be md5: and 32 hex digits, or sha256: and 64 hex digits")
        return value

    _check_name = field_validator("name")(_registered(_datasets, "dataset"))


class NoParams(Section):
    """A backbone or method without knobs of its own (its block in params.yaml is ``{}``)."""


class SimCLRParams(Section):
    temperature: float = Field(0.5, gt=0)


class MoCoParams(Section):
    temperature: float = Field(0.2, gt=0)
    temperature_final: Optional[float] = Field(None, gt=0)  # null: constant; else cosine-annealed to this
    queue_size: Int = Field(8192, ge=1)
    momentum: float = Field(0.999, ge=0, le=1)  # of the key encoder's exponential moving average


class EarlyStoppingParams(Section):
    patience: Optional[Int] = Field(None, ge=1)  # null: train every epoch
    min_delta: float = Field(0.0, ge=0)


def _interval(low: float, high: float | None = None):
    """Field validator of [min, max] pairs inside [low, high]."""

    def check(value):
        if value is None:
            return value
        if len(value) != 2 or value[0] > value[1] or value[0] < low or (high is not None and value[1] > high):
            bound = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"must be [min, max] with min <= max, both {bound}")
        return value

    return check


class AugmentParams(Section):
    """A preset (imageclust/augment.py) and the strengths that replace its own; null keeps the preset's."""
    preset: str = "gray"
    crop_min_scale: Optional[float] = Field(None, gt=0, le=1)
    rotation_degrees: Optional[float] = Field(None, ge=0, le=180)
    hflip: Optional[bool] = None
    jitter: Optional[float] = Field(None, ge=0, le=1)
    jitter_prob: Optional[float] = Field(None, ge=0, le=1)
    grayscale_prob: Optional[float] = Field(None, ge=0, le=1)
    blur_prob: Optional[float] = Field(None, ge=0, le=1)
    blur_sigma: Optional[list[float]] = None
    noise_std: Optional[float] = Field(None, ge=0)
    erase_prob: Optional[float] = Field(None, ge=0, le=1)
    erase_scale: Optional[list[float]] = None

    _check_preset = field_validator("preset")(_registered(_augmentations, "augmentation preset"))
    _check_sigma = field_validator("blur_sigma")(_interval(0.0))
    _check_erase = field_validator("erase_scale")(_interval(0.0, 1.0))

    def strengths(self) -> dict:
        return self.model_dump(exclude={"preset"})


class PretrainParams(Section):
    method: str = "simclr"  # or none: nothing to train (a frozen backbone makes the features)
    backbone: str = "small_cnn"
    augment: AugmentParams = AugmentParams()
    epochs: Int = Field(100, ge=0)
    batch_size: Int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: Int = Field(5, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # after the warmup
    optimizer: Literal["adamw", "adam", "sgd", "lars"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and lars
    accumulate_steps: Int = Field(1, ge=1)  # batches whose gradients add up before each update
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 (or fp16) on CUDA, fp32 on the CPU
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    stem: Literal["cifar", "imagenet"] = "cifar"  # ResNets' first layers
    sobel: bool = False  # a fixed grayscale + Sobel filter before the backbone (DeepCluster)
    freeze_bn: bool = False  # batch norm statistics and weights stay fixed
    widths: Optional[list[Int]] = Field(None, min_length=1)  # small_cnn stages / mlp layers; null: their own
    projection_dims: list[Int] = Field(default_factory=lambda: [128, 64], min_length=1)  # hidden widths, output
    checkpoint_every: Int = Field(10, ge=1)
    # one block per method (pretrain.<method>); dvc.yaml makes the stage depend on the chosen one only
    simclr: SimCLRParams = SimCLRParams()
    moco: MoCoParams = MoCoParams()
    none: NoParams = NoParams()

    _check_method = field_validator("method")(_registered(_pretrain_methods, "pretrain method"))
    _check_backbone = field_validator("backbone")(_registered(_backbones, "backbone"))

    @field_validator("projection_dims", "widths")
    @classmethod
    def _widths(cls, value):
        if value is not None and any(w < 1 for w in value):
            raise ValueError("every width must be >= 1")
        return value

    @model_validator(mode="after")
    def _widths_apply(self):
        from .models.backbones import WIDTHS_TAKEN

        if self.widths is not None and self.backbone not in WIDTHS_TAKEN:
            raise ValueError(f"widths={self.widths} is invalid: backbone {self.backbone!r} has fixed widths; "
                             f"widths apply to {', '.join(sorted(WIDTHS_TAKEN))} (or set widths: null)")
        if self.backbone == "resnet32" and self.widths is not None and len(self.widths) != 3:
            raise ValueError(f"widths={self.widths} is invalid: resnet32 has three stages, so three widths")
        return self


class TorchvisionExtract(Section):
    model: str = "resnet50"
    weights: Optional[str] = "DEFAULT"  # a weights name of that model, DEFAULT, or null for random weights

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from torchvision.models import list_models

        names = list_models()
        if value not in names:
            raise ValueError(f"unknown torchvision model {value!r}; e.g. resnet50, vgg16, convnext_tiny, vit_b_16")
        return value

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: Optional[str], info) -> Optional[str]:
        from torchvision.models import get_model_weights

        model = info.data.get("model")
        if value is None or value == "DEFAULT" or model is None:
            return value
        names = [w.name for w in get_model_weights(model)]
        if value not in names:
            raise ValueError(f"unknown weights {value!r} for {model}; allowed: DEFAULT, null, {', '.join(names)}")
        return value


class TimmExtract(Section):
    model: str = "resnet50.a1_in1k"
    pretrained: bool = True

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        import timm

        if not timm.is_model(value):
            raise ValueError(f"unknown timm model {value!r} (timm.list_models() lists them)")
        return value


class DinoV2Extract(Section):
    model: str = Field("small", min_length=1)  # small | base | large | giant, a hub name or a local folder
    pooling: Literal["cls", "cls_mean"] = "cls_mean"


class HuggingFaceExtract(Section):
    model: str = Field("google/vit-base-patch16-224-in21k", min_length=1)  # hub name or local folder
    pooling: Literal["pooler", "cls", "mean", "cls_mean"] = "cls"


class ExtractParams(Section):
    backbone: str = "encoder"
    batch_size: Optional[Int] = Field(None, ge=1)  # null: 256 on a GPU, 32 on a CPU
    image_size: Optional[Int] = Field(None, ge=8, le=1024)  # null: the backbone's own (224, or native)
    dtype: Literal["float32", "float16"] = "float32"
    shard_rows: Int = Field(10_000, ge=1)
    num_workers: Int = Field(1, ge=0)
    # one block per backbone (extract.<backbone>); dvc.yaml makes the stage depend on the chosen one only
    encoder: NoParams = NoParams()
    pixels: NoParams = NoParams()
    efficientnet_lite0: NoParams = NoParams()
    torchvision: TorchvisionExtract = TorchvisionExtract()
    timm: TimmExtract = TimmExtract()
    dinov2: DinoV2Extract = DinoV2Extract()
    huggingface: HuggingFaceExtract = HuggingFaceExtract()

    _check_backbone = field_validator("backbone")(_registered(_extractors, "feature extractor"))


class KMeansParams(Section):
    backend: Literal["sklearn", "faiss"] = "sklearn"
    init: Literal["kmeans++", "random"] = "kmeans++"  # faiss only: scikit-learn always seeds with k-means++
    n_init: Int = Field(10, ge=1)
    max_iter: Int = Field(300, ge=1)
    spherical: bool = False  # cosine k-means, centres renormalised each step (faiss)

    @model_validator(mode="after")
    def _spherical_needs_faiss(self):
        if self.spherical and self.backend != "faiss":
            raise ValueError("spherical k-means needs backend faiss")
        return self


class GMMParams(Section):
    covariance: Literal["diag", "full", "tied", "spherical"] = "diag"
    n_init: Int = Field(1, ge=1)
    max_iter: Int = Field(200, ge=1)
    reg_covar: float = Field(1e-6, gt=0)


class SpectralParams(Section):
    num_neighbors: Int = Field(10, ge=1)
    assign_labels: Literal["kmeans", "cluster_qr", "discretize"] = "kmeans"
    eigen_solver: Literal["arpack", "lobpcg"] = "arpack"


class AgglomerativeParams(Section):
    linkage: Literal["ward", "average", "complete", "single"] = "ward"
    num_neighbors: Int = Field(10, ge=1)  # the kNN connectivity graph that keeps memory linear


class HDBSCANParams(Section):
    min_cluster_size: Int = Field(15, ge=2)
    min_samples: Optional[Int] = Field(None, ge=1)  # null: min_cluster_size
    cluster_selection_epsilon: float = Field(0.0, ge=0)
    num_neighbors: Int = Field(10, ge=1)  # the vote that assigns new points


class PICParams(Section):
    num_neighbors: Int = Field(5, ge=1)
    sigma: float = Field(0.2, gt=0)  # Gaussian kernel bandwidth, for unit-length features
    alpha: float = Field(0.001, gt=0, lt=1)  # weight of the walk against the restart
    iterations: Int = Field(200, ge=1)
    distribute_singletons: bool = True


class UmapParams(Section):
    num_neighbors: Int = Field(15, ge=2)
    min_dist: float = Field(0.0, ge=0)  # 0 packs clusters tightly: what clustering wants
    epochs: Optional[Int] = Field(None, ge=1)  # null: umap-learn's choice (500 below 10,000 points, else 200)


class AutoKParams(Section):
    min_k: Int = Field(2, ge=2)
    max_k: Int = Field(20, ge=2)
    max_samples: Int = Field(5000, ge=10)  # fits per candidate K run on a seeded subsample this large
    criterion: Literal["auto", "silhouette", "eigengap", "bic"] = "auto"  # auto: the method's own
    num_neighbors: Int = Field(10, ge=1)  # the kNN graph of the eigengap

    @model_validator(mode="after")
    def _range(self):
        if self.max_k < self.min_k:
            raise ValueError(f"max_k={self.max_k} is below min_k={self.min_k}")
        return self


class ClusterParams(Section):
    method: str = "kmeans"
    k: Union[Int, Literal["auto"]] = 10  # auto: chosen without labels in [auto_k.min_k, auto_k.max_k]
    auto_k: AutoKParams = AutoKParams()
    l2_normalize: bool = True
    standardize: bool = False  # per feature: zero mean, unit variance
    pca_dim: Optional[Int] = Field(None, ge=1)
    whiten: bool = False
    umap_dim: Optional[Int] = Field(None, ge=1)  # null: no UMAP
    umap: UmapParams = UmapParams()
    # one block per method (cluster.<method>); dvc.yaml makes the stage depend on the chosen one only
    kmeans: KMeansParams = KMeansParams()
    gmm: GMMParams = GMMParams()
    spectral: SpectralParams = SpectralParams()
    agglomerative: AgglomerativeParams = AgglomerativeParams()
    hdbscan: HDBSCANParams = HDBSCANParams()
    pic: PICParams = PICParams()

    _check_method = field_validator("method")(_registered(_cluster_methods, "cluster method"))

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer >= 2 or 'auto'")
        if value < 2:
            raise ValueError("Input should be greater than or equal to 2")
        return value

    @model_validator(mode="after")
    def _bic_needs_a_mixture(self):
        if self.auto_k.criterion == "bic" and self.method != "gmm":
            raise ValueError(f"cluster.auto_k.criterion=bic needs cluster.method=gmm, not {self.method}")
        return self

    @model_validator(mode="after")
    def _spherical_needs_unit_vectors(self):
        if self.kmeans.spherical and not self.l2_normalize:
            raise ValueError("cluster.kmeans.spherical=true needs cluster.l2_normalize=true")
        return self


class ScanFinetune(Section):
    epochs: Int = Field(60, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    num_neighbors: Int = Field(10, ge=1)
    entropy_weight: float = Field(5.0, ge=0)
    num_heads: Int = Field(5, ge=1)
    hidden_dim: Int = Field(256, ge=0)
    feature_noise: float = Field(0.1, ge=0)
    self_label_epochs: Int = Field(20, ge=0)
    confidence_threshold: float = Field(0.99, gt=0, lt=1)
    train_backbone: bool = False  # train the encoder on augmented images too, as the paper does
    backbone_lr: float = Field(1e-4, gt=0)  # the encoder's learning rate when train_backbone
    augment: str = "gray"  # train_backbone: the augmentation preset of the anchors and neighbours

    _check_augment = field_validator("augment")(_registered(_augmentations, "augmentation preset"))


class TemiFinetune(Section):
    epochs: Int = Field(100, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    num_heads: Int = Field(1, ge=1)  # heads started from the centroids stay equal: more pay off from random starts
    hidden_dim: Int = Field(0, ge=0)  # 0: linear heads (which init_from_centroids needs)
    num_neighbors: Int = Field(25, ge=1)
    beta: float = Field(0.6, gt=0, le=1)
    student_temperature: float = Field(0.1, gt=0)
    teacher_temperature: float = Field(0.04, gt=0)
    teacher_momentum: float = Field(0.996, ge=0, le=1)
    probs_momentum: float = Field(0.9, ge=0, lt=1)  # of the teacher's running cluster marginal
    init_from_centroids: bool = True

    @model_validator(mode="after")
    def _centroids_need_linear_heads(self):
        if self.init_from_centroids and self.hidden_dim != 0:
            raise ValueError("init_from_centroids=true needs hidden_dim=0 (linear heads whose weights are the "
                             "centroids)")
        return self


class DeepClusterFinetune(Section):
    epochs: Int = Field(20, ge=1)
    reassign_every: Int = Field(1, ge=1)  # epochs between two clusterings
    lr: float = Field(1e-3, gt=0)  # SGD; the paper's 0.05 trains from scratch, this fine-tunes a trained encoder
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-5, ge=0)
    pca_dim: Optional[Int] = Field(None, ge=1)  # null: no PCA (the paper: 256, whitened, of 4096-d features)
    whiten: bool = True
    kmeans_backend: Literal["sklearn", "faiss"] = "sklearn"
    kmeans_n_init: Int = Field(5, ge=1)
    num_clusters: Optional[Int] = Field(None, ge=2)  # the pseudo-classes of training; null: 10 x K (at most n/10)
    augment: str = "gray"
    contrastive: Literal["none", "head", "views"] = "none"  # the DeepCluster system's two contrastive variants
    contrastive_weight: float = Field(1.0, ge=0)
    temperature: float = Field(0.5, gt=0)
    projection_dims: list[Int] = Field(default_factory=lambda: [128, 64], min_length=1)

    _check_augment = field_validator("augment")(_registered(_augmentations, "augmentation preset"))


class SpectralFinetune(Section):
    epochs: Int = Field(20, ge=1)
    recluster_every: Int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    num_neighbors: Int = Field(10, ge=1)  # the kNN affinity graph of the spectral clustering
    temperature: float = Field(0.1, gt=0)  # of the loss towards the cluster centres
    augment: str = "gray"
    score: Literal["silhouette", "davies_bouldin", "calinski_harabasz"] = "silhouette"
    patience: Optional[Int] = Field(3, ge=1)  # epochs without a better score; null: never stop early
    score_samples: Int = Field(5000, ge=10)

    _check_augment = field_validator("augment")(_registered(_augmentations, "augmentation preset"))


class FinetuneParams(Section):
    method: str = "scan"  # or none: the cluster stage's assignments are final
    batch_size: Int = Field(256, ge=2)
    checkpoint_every: Int = Field(5, ge=1)
    # one block per method (finetune.<method>); dvc.yaml makes the stage depend on the chosen one only
    scan: ScanFinetune = ScanFinetune()
    temi: TemiFinetune = TemiFinetune()
    deepcluster: DeepClusterFinetune = DeepClusterFinetune()
    spectral: SpectralFinetune = SpectralFinetune()
    none: NoParams = NoParams()

    _check_method = field_validator("method")(_registered(_finetune_methods, "finetune method"))

    @property
    def block(self):
        """The chosen method's own block."""
        return getattr(self, self.method)


class EvaluateParams(Section):
    splits: Optional[list[str]] = Field(None, min_length=1)
    max_silhouette_samples: Int = Field(5000, ge=10)


class PlotParams(Section):
    embedding: Literal["tsne", "pca", "umap"] = "tsne"
    max_points: Int = Field(3000, ge=10)
    thumbnail_grid: Int = Field(25, ge=0)
    sheet_confident: Int = Field(40, ge=1)
    sheet_uncertain: Int = Field(10, ge=0)
    overview_images: Int = Field(12, ge=1)
    max_sheets: Int = Field(100, ge=1)


SECTIONS: dict[str, type[Section]] = {
    "data": DataParams,
    "pretrain": PretrainParams,
    "extract": ExtractParams,
    "cluster": ClusterParams,
    "finetune": FinetuneParams,
    "evaluate": EvaluateParams,
    "plot": PlotParams,
}
GLOBAL_KEYS: dict[str, Any] = {"seed": 0, "device": "auto"}


def _format_error(section: str, raw: dict, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join([section, *(str(p) for p in first["loc"])])
    if first["type"] == "extra_forbidden":
        model, where = SECTIONS[section], section
        for part in first["loc"][:-1]:  # a nested block such as extract.dinov2
            annotation = model.model_fields[str(part)].annotation
            model, where = annotation, f"{where}.{part}"
        allowed = ", ".join(model.model_fields) or "none"
        return f"params: unknown key {key}; allowed keys in {where}: {allowed}"
    value = raw
    for part in first["loc"]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]  # an item of a list, e.g. data.train_splits.0
        else:
            value = None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and isinstance(value, dict):  # a check across a block's keys
        return f"params: {key} is invalid: {message}"
    return f"params: {key}={value!r} is invalid: {message}"


def read_params_file(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params: file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {path} must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS) - set(GLOBAL_KEYS))
    if unknown:
        allowed = ", ".join([*GLOBAL_KEYS, *SECTIONS])
        raise ParamsError(f"params: unknown top-level key {unknown[0]!r}; allowed: {allowed}")
    return raw


def load_section(section: str, raw: dict):
    """Validate one section of an already-read params mapping."""
    values = raw.get(section) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"params: {section} must be a mapping, got {values!r}")
    try:
        return SECTIONS[section](**values)
    except ValidationError as err:
        raise ParamsError(_format_error(section, values, err)) from None


class GlobalParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    seed: Int = Field(0, ge=0)
    device: Device = "auto"


def load_globals(raw: dict) -> GlobalParams:
    try:
        return GlobalParams(**{k: raw[k] for k in GLOBAL_KEYS if k in raw})
    except ValidationError as err:
        first = err.errors()[0]
        key = first["loc"][0]
        raise ParamsError(f"params: {key}={raw.get(key)!r} is invalid: {first['msg']}") from None


def load_params(*sections: str, path: str | Path = "params.yaml"):
    """Read ``params.yaml`` and return ``(globals, section objects...)`` for the named sections."""
    raw = read_params_file(path)
    return (load_globals(raw), *(load_section(s, raw) for s in sections))


def check_across_sections(extract: "ExtractParams", finetune: "FinetuneParams") -> None:
    """Checks that need two sections at once."""
    from .finetune import trains_encoder

    if trains_encoder(finetune) and extract.backbone != "encoder":
        raise ParamsError(f"params: finetune.method={finetune.method!r} is invalid with extract.backbone="
                          f"{extract.backbone}: it trains the encoder of the pretrain stage; set extract.backbone="
                          "encoder (pretrain.method=none starts it from random weights)")


def check_against_prepared(meta: dict, gparams: GlobalParams, data: DataParams, cluster: ClusterParams,
                           evaluate: EvaluateParams) -> None:
    """Checks that need the data (its splits and their sizes), made before any stage runs when the
    prepared data on disk is the one these params make (``meta["prepared_with"]``), so that a bad value
    stops the run before DVC has removed the outputs of the stage that would have read it."""
    from .clustering import check_k_fits
    from .data.prepared import preparation_key
    from .evaluate import check_report_splits

    if meta.get("prepared_with") != preparation_key(data, gparams.seed):
        return  # the download stage will prepare other data: the stages check it themselves
    counts = meta["counts"]
    missing = [s for s in data.train_splits if s not in counts]
    if missing:
        raise ParamsError(f"params: data.train_splits={data.train_splits} is invalid: the prepared data holds "
                          f"splits {sorted(counts)}")
    check_report_splits(evaluate.splits, sorted(counts))
    check_k_fits(cluster, sum(counts[s] for s in data.train_splits))
