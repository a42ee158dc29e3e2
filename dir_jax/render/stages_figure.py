"""A row of titled pictures, e.g. one overlay per refinement stage (as the paper's Fig. 5)."""

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def titled_row(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    gap_px: int = 4,
    background_rgb: Sequence[int] = (255, 255, 255),
    text_rgb: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
  """Pictures side by side, each under its centred title.

  Args:
    panels: (H, W_i, 3) uint8 RGB pictures of one height.
    titles: one line of text per panel.
    gap_px: empty columns between panels and around the row.
    background_rgb, text_rgb: (3,) uint8 colours.

  Returns:
    (title_px + H + gap_px, sum W_i + (n + 1) gap_px, 3) uint8, where the title band is
    `title_px = round(0.16 H)` rows (at least 14).
  """
  panels = [np.asarray(p) for p in panels]
  if not panels or len(panels) != len(titles):
    raise ValueError(f'need as many titles as panels (at least one), got {len(panels)} and {len(titles)}')
  height = panels[0].shape[0]
  for panel in panels:
    if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[2] != 3 or panel.shape[0] != height:
      raise ValueError(f'panels must be (H, W, 3) uint8 of one height, got {panel.shape} {panel.dtype}')
  title_px = max(14, round(0.16 * height))
  width = sum(p.shape[1] for p in panels) + (len(panels) + 1) * gap_px
  canvas = Image.new('RGB', (width, title_px + height + gap_px), tuple(background_rgb))
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default(size=round(0.6 * title_px))
  left_px = gap_px
  for panel, title in zip(panels, titles):
    canvas.paste(Image.fromarray(panel), (left_px, title_px))
    draw.text((left_px + panel.shape[1] / 2, title_px / 2), title, fill=tuple(text_rgb), font=font, anchor='mm')
    left_px += panel.shape[1] + gap_px
  return np.asarray(canvas, np.uint8)
