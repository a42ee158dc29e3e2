"""The network's configuration: one frozen dataclass read by the model, the config files and checkpoints.

`ModelConfig` is the only place a DIR architecture field is declared. `DIR` and its refinement stages
hold one; `configs/*.py` start `config.model` from `ModelConfig().to_dict()`; an orbax checkpoint
stores `to_dict()` and rebuilds with `from_mapping`, which refuses names it does not know, so a field
can be neither ignored in a config nor dropped from a checkpoint. The loss centres the ground truth
at `center_idx`, the joint the network centres its outputs at.

Plain Python only (no JAX), so that config files can import it.
"""

import dataclasses
from typing import Any, Mapping

# The network's length unit: predicted offsets (right root minus left root) and the normalised xyz its
# position embeddings read are in units of 0.15 m (docs/architecture.md#conventions).
OFFSET_UNIT_M = 0.15
PROJECTIONS = ('bone', 'mfp', 'sfp', 'mhp')  # paper Table 1; 'bone' is the released code's
FUSIONS = ('factored', 'dense')


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One refinement stage: grid side, encoder map for the skip connection, projection mask radius (cells)."""

  size: int
  skip: str
  threshold: float


RELEASED_STAGES = (StageSpec(16, 'c3', 1.0), StageSpec(32, 'c2', 2.0))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """DIR's architecture (docs/architecture.md); the defaults are the released code's.

  Attributes:
    stages: refinement stages, in order (`StageSpec`; the paper's three-stage variant adds a second
      32x32 stage).
    center_idx: the MANO joint (21-joint order) the network centres joints and meshes at, and the
      loss centres the ground truth at (the released root_joint, the wrist; docs/quirks.md#q1).
    encoder_width: ResNet-50 stem width (64); smaller only for small test and demo models.
    attention_dim: hidden channels of the initial regressor's attention branch.
    img_feat_dim: channels of the refinement stages' image features.
    emb_dim: channels of the per-joint embeddings (image samples, position embeddings, GCN).
    joint_dim: channels of the joint features after the inter-hand transformer (one plane's channels).
    projection: joint features -> image space: 'bone' (released), 'mfp', 'sfp' or 'mhp' (paper Table 1).
    use_gcn / use_transformer: ablation switches (paper Table 1).
    transformer_blocks: which of the transformer's 4 blocks run (released: 1, 2, 3; docs/quirks.md#q5).
    heatmap_sigma: Gaussian width in cells for projection='mhp'.
    camera_scale_init: initial bias of every head's weak-perspective scale (uv per metre); 0 as
      PyTorch's init; a typical value (~9 for InterHand2.6M crops) spares a short run thousands of steps.
    fusion: how 'bone' / 'mfp' planes are fused: 'factored' (same numbers, ~20x fewer FLOPs) or 'dense'
      (as the reference; `dir_jax.model.fusion`). Same parameters either way.
    scan_stages: equal consecutive stages run as one `nn.scan`; False: each its own group (same numbers,
      compile time grows with the stages).
    per_hand_bn_stats: the two modules shared by both hands keep per-hand BatchNorm running statistics
      instead of the reference's blend of both (eval mode only; docs/quirks.md#q15).
  """

  stages: tuple[StageSpec, ...] = RELEASED_STAGES
  center_idx: int = 0
  encoder_width: int = 64
  attention_dim: int = 1024
  img_feat_dim: int = 256
  emb_dim: int = 128
  joint_dim: int = 64
  projection: str = 'bone'
  use_gcn: bool = True
  use_transformer: bool = True
  transformer_blocks: tuple[int, ...] = (1, 2, 3)
  heatmap_sigma: float = 1.0
  camera_scale_init: float = 0.0
  fusion: str = 'factored'
  scan_stages: bool = True
  per_hand_bn_stats: bool = False

  def __post_init__(self):
    # Sequences from JSON or a ConfigDict become the hashable tuples a Flax module attribute needs.
    stages = tuple(s if isinstance(s, StageSpec) else StageSpec(int(s[0]), str(s[1]), float(s[2])) for s in self.stages)
    object.__setattr__(self, 'stages', stages)
    object.__setattr__(self, 'transformer_blocks', tuple(int(b) for b in self.transformer_blocks))
    if not stages:
      raise ValueError(
          'ModelConfig.stages is empty; DIR needs at least one refinement stage, e.g. '
          f'{[dataclasses.astuple(s) for s in RELEASED_STAGES]}'
      )
    if self.projection not in PROJECTIONS:
      raise ValueError(f'ModelConfig.projection must be one of {PROJECTIONS}, got {self.projection!r}')
    if self.fusion not in FUSIONS:
      raise ValueError(f'ModelConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}')

  def to_dict(self) -> dict[str, Any]:
    """Every field as plain values (JSON-serialisable, a ConfigDict's contents): stages as
    (size, skip, threshold) triples."""
    out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
    out['stages'] = tuple(dataclasses.astuple(s) for s in self.stages)
    return out

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> 'ModelConfig':
    """The config `to_dict` (or a `config.model` ConfigDict) describes; absent fields take their defaults
    (checkpoints written before a field existed). Names that are not fields, other than `ignore`, are
    refused: a misspelt or stale field would otherwise silently change nothing."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names - set(ignore))
    if unknown:
      raise ValueError(
          f'unknown model config fields {unknown}; ModelConfig has {sorted(names)} (dir_jax/model/config.py)'
      )
    return cls(**{name: mapping[name] for name in names if name in mapping})

  def replace(self, **changes) -> 'ModelConfig':
    return dataclasses.replace(self, **changes)
