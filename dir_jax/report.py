"""Evaluation reports (docs/evaluation.md): reference numbers, a Markdown table and PCK plots of a result dict.

Reads the metric dicts of `dir_jax.metrics` (`MetricAccumulator.result`); computes no metric.
"""

from typing import Mapping, NamedTuple, Sequence

from dir_jax import metrics, protocol


def paper_reference(release: str = 'current') -> dict[str, float]:
  """The authors' README numbers of the released checkpoint (docs/evaluation.md), protocol `protocol.DIR`.

  Args:
    release: 'current' (the checkpoint of the reference's commit e309457) or 'oct2023' (the earlier checkpoint).

  Returns:
    Keys as in `metrics.summarize` without the stage prefix (mm, pixels for miaa_*).
  """
  numbers = {
      'current': {
          'mpjpe': (10.733, 9.722, 10.228),
          'mpvpe': (10.479, 9.521, 10.000),
          'miaa_joint': (6.330, 5.843, 6.086),
          'miaa_vert': (6.236, 5.768, 6.002),
          'mrrpe': 29.261,
      },
      'oct2023': {
          'mpjpe': (10.746, 9.605, 10.176),
          'mpvpe': (10.491, 9.405, 9.948),
          'miaa_joint': (6.332, 5.808, 6.070),
          'miaa_vert': (6.236, 5.725, 5.981),
          'mrrpe': 28.983,
      },
  }[release]
  key = protocol.DIR.key
  out = {f'{key}/mrrpe/all': numbers.pop('mrrpe')}
  for metric, values in numbers.items():
    out.update({f'{key}/{metric}/{h}': v for h, v in zip(metrics.HANDS + ('all',), values)})
  return out


class Published(NamedTuple):
  """A peer's published number, under the protocol it was measured with (docs/evaluation.md)."""

  protocol_key: str
  method: str
  metric: str  # as in `metrics.summarize`: mpjpe, mpvpe (mm), mrrpe (mm); both hands ('all')
  value: float
  source: str


PUBLISHED = (
    Published(protocol.DIR.key, 'DIR', 'mpjpe', 10.23, 'DIR README, released checkpoint'),
    Published(protocol.DIR.key, 'DIR', 'mpvpe', 10.00, 'DIR README, released checkpoint'),
    Published(protocol.DIR.key, 'DIR', 'mrrpe', 29.26, 'DIR README, released checkpoint'),
    Published(protocol.DIR_MIDDLE_MCP.key, 'IntagHand', 'mpjpe', 8.79, 'IntagHand README'),
    Published(protocol.DIR_MIDDLE_MCP.key, 'IntagHand', 'mpvpe', 9.03, 'IntagHand README'),
    Published(
        protocol.INTERHAND26M_HUMAN_ANNOT.key,
        'InterWild',
        'mpjpe_sh_ih_mean',
        13.65,
        'InterWild (CVPR 2023); its evaluation prints this average as the all-sequences MPJPE',
    ),
    Published(protocol.INTERHAND26M_HUMAN_ANNOT.key, 'InterWild', 'mpvpe', 11.55, 'InterWild (CVPR 2023)'),
    Published(protocol.INTERHAND26M_HUMAN_ANNOT.key, 'InterWild', 'mrrpe', 26.74, 'InterWild (CVPR 2023)'),
    Published(protocol.INTERHAND26M.key, 'InterNet', 'mpjpe', 14.22, 'InterHand2.6M (ECCV 2020), all test frames'),
    Published(protocol.INTERHAND26M.key, 'A2J-Transformer', 'mpjpe', 9.63, 'A2J-Transformer (CVPR 2023)'),
)


_TABLE_METRICS = (
    ('mpjpe', 'mm'),
    ('mpjpe_sh_ih_mean', 'mm'),
    ('mpvpe', 'mm'),
    ('miaa_joint', 'px'),
    ('miaa_vert', 'px'),
    ('auc', 'PCK area'),
    ('mrrpe', 'mm'),
)


def _last_stage(results: Mapping) -> str:
  stages = sorted({k.split('/')[0] for k in results if k.startswith('stage')}, key=lambda s: int(s[5:]))
  if not stages:
    raise ValueError('no stage entries in results')
  return stages[-1]


def _name(results: Mapping, key: str) -> str:
  return results.get('protocols', {}).get(key) or metrics.protocol_names([key])[key]


def markdown_table(
    results: Mapping,
    reference: Mapping[str, float] | None = None,
    stage: str | None = None,
    published: Sequence[Published] = PUBLISHED,
) -> str:
  """A Markdown table of one stage's metrics (default: the last), with reference numbers beside them.

  One row per protocol (named in words) and metric; columns left / right / all for ours and for
  `reference` (`paper_reference()`), '-' where a number does not exist; then the `published`
  numbers of peers, each only under a protocol that was computed.
  """
  stage = stage or _last_stage(results)
  reference = reference or {}
  fmt = lambda v: '-' if v is None else f'{v:.3f}'
  lines = [
      '| protocol | metric | unit | left | right | all | ref left | ref right | ref all |',
      '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  keys = sorted({k.split('/')[1] for k in results if k.startswith(f'{stage}/') and k.endswith('/num_samples')})
  computed = [key for key in keys if f'{stage}/{key}/mpjpe/all' in results]
  for key in computed:
    for metric, unit in _TABLE_METRICS:
      ours = [results.get(f'{stage}/{key}/{metric}/{h}') for h in metrics.HANDS + ('all',)]
      ref = [reference.get(f'{key}/{metric}/{h}') for h in metrics.HANDS + ('all',)]
      if any(v is not None for v in ours):
        lines.append(f'| {_name(results, key)} | {metric} | {unit} | ' + ' | '.join(fmt(v) for v in ours + ref) + ' |')
  if f'{stage}/iv/all' in results:
    lines.append(f'| - | iv | cm^3 | - | - | {fmt(results[f"{stage}/iv/all"])} | - | - | - |')
  empty = [key for key in keys if key not in computed]
  if empty:
    lines += ['', 'No sample scored under: ' + '; '.join(_name(results, key) for key in empty) + '.']
  peers = [p for p in published if p.protocol_key in computed]
  if peers:
    lines += [
        '',
        'Published numbers, each under the protocol it was measured with (docs/evaluation.md):',
        '',
        '| protocol | method | metric | all (mm) | ours, all (mm) | source |',
        '| --- | --- | --- | ---: | ---: | --- |',
    ]
    for p in peers:
      ours = results.get(f'{stage}/{p.protocol_key}/{p.metric}/all')
      lines.append(
          f'| {_name(results, p.protocol_key)} | {p.method} | {p.metric} | {p.value:.2f} | {fmt(ours)} | '
          f'{p.source} |'
      )
  return '\n'.join(lines) + '\n'


def pck_plot(results: Mapping, path: str, stage: str | None = None) -> None:
  """Writes a PNG of the 3D PCK curves of one stage (default: the last), one panel per protocol."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  stage = stage or _last_stage(results)
  thresholds = results['pck_thresholds_mm']
  keys = sorted({k.split('/')[1] for k in results if k.startswith(f'{stage}/') and '/pck/' in k})
  fig = Figure(figsize=(4.5 * len(keys), 4))
  FigureCanvasAgg(fig)
  for i, key in enumerate(keys):
    ax = fig.add_subplot(1, len(keys), i + 1)
    for h in metrics.HANDS + ('all',):
      ax.plot(thresholds, results[f'{stage}/{key}/pck/{h}'], label=f'{h} (AUC {results[f"{stage}/{key}/auc/{h}"]:.3f})')
    ax.set_title(_name(results, key).replace(', ', ',\n', 1), fontsize=9)
    ax.set_xlabel('threshold (mm)')
    ax.set_ylabel('3D PCK')
    ax.set_xlim(thresholds[0], thresholds[-1])
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc='lower right')
  fig.suptitle(f'{stage}: 3D joint PCK')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
