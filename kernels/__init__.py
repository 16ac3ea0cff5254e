"""specc.kernels: Triton kernels (with pure-torch references) for sequential recommendation.

Every public function takes ``backend="auto" | "triton" | "torch"``: "auto" runs Triton when the
tensors are on CUDA or TRITON_INTERPRET=1 and the torch reference otherwise (the reference is
also the production CPU path, except for training's full-catalog loss: ``linear_cross_entropy_cpu``).
"""
from ._handover import hand_over

# imported by that name, not as specc.kernels (a checkout's root is on sys.path): the top-level name is Hugging
# Face's `kernels` package where one is installed, which transformers imports
if __name__ != "kernels" or not hand_over(__name__, __file__):
    from .gather_concat import gather_concat, gather_concat_reference
    from .gather_sum import gather_sum, gather_sum_reference
    from .linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_cpu, linear_cross_entropy_reference
    from .sampled_softmax_loss import sampled_softmax_loss, sampled_softmax_loss_reference
    from .topk_scores import topk_scores, topk_scores_reference

    __all__ = [
        "gather_concat", "gather_concat_reference",
        "gather_sum", "gather_sum_reference",
        "linear_cross_entropy", "linear_cross_entropy_cpu", "linear_cross_entropy_reference",
        "sampled_softmax_loss", "sampled_softmax_loss_reference",
        "topk_scores", "topk_scores_reference",
    ]
