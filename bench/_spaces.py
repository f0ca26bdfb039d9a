"""The small CPU search space the pruning and selection benchmarks share (one definition).

NOTE: a wide log-lr range gives the pruner something to stop (very low/high lr learn nothing);
atto/10t at 48-64 px keep one epoch around a second on a CPU core.
"""

SMALL_SPACE = """
[params]
resolution = {resolution}
resize_mode = "stretch"
image_backbone = "convnext_atto"
mask_backbone = "resnet10t"
pretrained = false
head_hidden = 32
epochs = {epochs}
batch_size = 16
t0 = {epochs}
lr = {{ low = 1e-5, high = 3e-2, log = true }}
weight_decay = {{ low = 1e-3, high = 1e-1, log = true }}
dropout = {{ low = 0.0, high = 0.5 }}
color_jitter_prob = {{ low = 0.0, high = 1.0 }}
cutmix_prob = [0.0, 0.5]
"""


def small_space(*, resolution: int, epochs: int, extra: str = "") -> str:
    """The space file's text at this resolution and epoch count, plus `extra` TOML lines."""
    return SMALL_SPACE.format(resolution=resolution, epochs=epochs) + extra
