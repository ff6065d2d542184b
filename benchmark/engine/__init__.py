"""The engine: passes over chunks of items (``passes``, their sums in ``sums``), forward-only work (``forward``),
function modes (``modes``), kernels (``kernels``) and the model-state context managers (``state``)."""

from benchmark.engine.kernels import conv2d_input_grad
from benchmark.engine.modes import FEW_CHANNELS, _FewChannelConv, _GuidedReLU, few_channel_convs, guided_relus
from benchmark.engine.passes import Engine, StagePlan
from benchmark.engine.sums import estimate_item_bytes
from benchmark.engine.state import capture_output, channels_last, prepared, swapped
from benchmark.methods.primitives import NoisyStats, Results
from benchmark.sampling import IG_RULES, noise_scale, path_alphas, standard_noise

__all__ = ["Engine", "FEW_CHANNELS", "IG_RULES", "NoisyStats", "Results", "StagePlan", "capture_output", "channels_last",
           "conv2d_input_grad", "estimate_item_bytes", "few_channel_convs", "guided_relus", "noise_scale", "path_alphas",
           "prepared", "standard_noise", "swapped", "_FewChannelConv", "_GuidedReLU"]
