"""Memory-lean normalisation: an autograd function that keeps only the input and per-row statistics.

What transformers' modules leave for backward, per token of a LLaMA-7B block (bf16): LlamaRMSNorm
upcasts its input to fp32 and autograd keeps that fp32 copy twice (for pow and for the multiply)
plus the normalised bf16 tensor, about 41 KB per norm; under CUDA autocast nn.LayerNorm keeps an
fp32 copy of its input. A norm-only backward needs the input and 1/rms (and the mean for
LayerNorm), nothing else: this function computes in fp32 like the originals but saves the input
in its own dtype plus fp32 per-row statistics (8 KB + 4 bytes per token at width 4096), and
rebuilds the normalised value in backward.

Three output conventions cover the supported families (`style`):
  * "llama":  w * (x * rstd).to(x.dtype)              LLaMA/Vicuna, Mistral, Qwen2 RMSNorm
  * "gemma":  (x * rstd * (1 + w)).to(x.dtype)        Gemma, Gemma-2 RMSNorm
  * "layer":  ((x - mean) * rstd * w + b).to(x.dtype) nn.LayerNorm (Phi, GPT-NeoX), w and b optional
"llama" rounds the normalised value to the input dtype before the weight multiply and returns
the promoted dtype of weight and input, exactly as LlamaRMSNorm does; "layer" returns the input
dtype (under CUDA autocast nn.LayerNorm would return fp32, which the next linear casts straight
back to the compute dtype, so nothing downstream changes).
"""
import torch

NORM_STYLES = ("llama", "gemma", "layer")


def _leading_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(x.dim() - 1))


def _statistics(xf: torch.Tensor, eps: float, centred: bool):
    """(mean or None, rstd) per row of an fp32 tensor; variance is the biased one, as torch uses."""
    if centred:
        mean = xf.mean(-1, keepdim=True)
        var = (xf - mean).pow(2).mean(-1, keepdim=True)
    else:
        mean = None
        var = xf.pow(2).mean(-1, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def _normalised(xf: torch.Tensor, mean, rstd) -> torch.Tensor:
    return (xf - mean) * rstd if mean is not None else xf * rstd


class LeanNormFunction(torch.autograd.Function):
    """y = norm(x) * weight (+ bias) in one of NORM_STYLES; saves x (its dtype), rstd and mean (fp32)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, style: str):
        xf = x.float()
        mean, rstd = _statistics(xf, eps, centred=style == "layer")
        xhat = _normalised(xf, mean, rstd)
        if style == "llama":
            out = weight * xhat.to(x.dtype)
        elif style == "gemma":
            out = (xhat * (1.0 + weight.float())).to(x.dtype)
        else:
            if weight is not None:
                xhat = xhat * weight.float()
            if bias is not None:
                xhat = xhat + bias.float()
            out = xhat.to(x.dtype)
        ctx.style = style
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        style = ctx.style
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g = grad_out.float()
        xhat = _normalised(x.float(), mean, rstd)
        grad_x = grad_w = grad_b = None
        if style == "llama":
            # The weight multiplies the normalised value after its rounding to x's dtype.
            if need_w:
                grad_w = (g * xhat.to(x.dtype).float()).sum(_leading_dims(x)).to(weight.dtype)
            g_hat = g * weight.float()
        elif style == "gemma":
            if need_w:
                grad_w = (g * xhat).sum(_leading_dims(x)).to(weight.dtype)
            g_hat = g * (1.0 + weight.float())
        else:
            if need_w and weight is not None:
                grad_w = (g * xhat).sum(_leading_dims(x)).to(weight.dtype)
            if need_b and bias is not None:
                grad_b = g.sum(_leading_dims(x)).to(bias.dtype)
            g_hat = g * weight.float() if weight is not None else g
        if need_x:
            # d/dx of x*rstd (RMS) or (x-mean)*rstd (LayerNorm), contracted with g_hat along the row.
            projection = (g_hat * xhat).mean(-1, keepdim=True)
            centred_g = g_hat - g_hat.mean(-1, keepdim=True) if style == "layer" else g_hat
            grad_x = (rstd * (centred_g - xhat * projection)).to(x.dtype)
        return grad_x, grad_w, grad_b, None, None


def lean_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, *, eps: float,
              style: str) -> torch.Tensor:
    """Normalise the last dimension of x in `style` (see the module docstring), memory-lean in backward."""
    if style not in NORM_STYLES:
        raise ValueError(f"norm style {style!r} is not one of {NORM_STYLES}")
    return LeanNormFunction.apply(x, weight, bias, eps, style)
