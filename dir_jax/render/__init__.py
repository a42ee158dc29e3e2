"""Rendering without OpenGL: a numpy z-buffer rasterizer, segmentation/dense targets and pictures."""

from dir_jax.render.overlay import LEFT_HAND_RGB, RIGHT_HAND_RGB
from dir_jax.render.overlay import render_overlay, render_shaded, render_side_view, save_png
from dir_jax.render.rasterizer import Fragments, interpolate_vertex_attributes, merge_meshes
from dir_jax.render.rasterizer import project_perspective, rasterize, render_seg_dense, shade
