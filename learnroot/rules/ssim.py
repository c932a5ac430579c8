"""Local SSIM (Wang et al. 2004) with a closed-form backward, and the softmax used by the paper's losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["relevance_softmax", "ssim_window", "ssim_map", "SSIMReference"]

# SSIM constants K1, K2 of Wang et al. (2004); the window of an 11 x 11 map or larger.
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_MAX_WINDOW, SSIM_SIGMA = 11, 1.5


def relevance_softmax(tensor: torch.Tensor) -> torch.Tensor:
    """Softmax over features of a ``(B, F)`` vector, or over space per channel of a ``(B, C, *S)`` map.

    Parameters
    ----------
    tensor : torch.Tensor
        ``(B, F)`` or ``(B, C, *spatial)``.

    Returns
    -------
    torch.Tensor
        Same shape; non-negative, summing to one per sample (vectors) or per channel (maps).
    """
    if tensor.dim() <= 2:
        return tensor.softmax(dim=-1)
    return tensor.flatten(2).softmax(dim=-1).view_as(tensor)


def ssim_window(size: int) -> tuple[int, float]:
    """The Gaussian window that fits a map side of ``size`` values.

    Parameters
    ----------
    size : int
        Length of the map along one axis.

    Returns
    -------
    (int, float)
        Window length ``k`` (the largest odd number ``<= min(11, size)``) and its standard deviation
        ``1.5 * k / 11`` (in map positions): the classic 11-tap, sigma-1.5 window on maps of 11 or
        more, shrunk proportionally on smaller ones (7 x 7 maps: 7 taps, sigma 0.95).
    """
    k = min(SSIM_MAX_WINDOW, size if size % 2 else size - 1)
    k = max(k, 1)
    return k, SSIM_SIGMA * k / SSIM_MAX_WINDOW


def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    window = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return window / window.sum()


def _as_maps(tensor: torch.Tensor) -> torch.Tensor:
    """View ``(B, F)`` as ``(B, 1, 1, F)``, ``(B, C, L)`` as ``(B, C, 1, L)``, ``(B, C, D, H, W)`` as
    ``(B, C, 1, D*H*W)``; ``(B, C, H, W)`` is returned as is."""
    if tensor.dim() == 2:
        return tensor[:, None, None, :]
    if tensor.dim() == 3:
        return tensor[:, :, None, :]
    if tensor.dim() == 4:
        return tensor
    return tensor.flatten(2)[:, :, None, :]


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor) -> torch.Tensor:
    """Local SSIM (Wang et al. 2004) between two maps, one value per position.

    Statistics are Gaussian-weighted over a window fitted to the map (:func:`ssim_window`), with
    reflect padding so that the SSIM map has the input's size and every position carries equal
    weight; channels are compared separately.

    Parameters
    ----------
    x, y : torch.Tensor
        ``(B, C, H, W)`` maps (``(B, F)`` vectors are treated as ``(B, 1, 1, F)`` maps).
    data_range : torch.Tensor
        ``(B,)`` dynamic range ``L`` of the data, in the maps' units; the constants are
        ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` SSIM values in ``[-1, 1]`` (dimensionless).
    """
    return SSIMReference(y, data_range)(x)


class SSIMReference:
    """Local SSIM (:func:`ssim_map`) against a fixed map ``y``, whose local statistics are computed once.

    The learned root compares the layer's response with the same relevance map at every descent
    step; this keeps the relevance's blurred mean and variance (and the constants) between steps.

    Parameters
    ----------
    y : torch.Tensor
        ``(B, C, H, W)`` map (``(B, F)`` vectors are treated as ``(B, 1, 1, F)`` maps).
    data_range : torch.Tensor
        ``(B,)`` dynamic range ``L``; ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``.
    """

    def __init__(self, y: torch.Tensor, data_range: torch.Tensor):
        y = _as_maps(y)
        channels, height, width = y.shape[1:]
        (kh, sh), (kw, sw) = ssim_window(height), ssim_window(width)
        # the 2-D Gaussian window is the outer product of two 1-D ones: blurred as two 1-D passes
        self.rows = _gaussian(kh, sh, y).reshape(1, 1, kh, 1).expand(channels, 1, kh, 1)
        self.columns = _gaussian(kw, sw, y).reshape(1, 1, 1, kw).expand(channels, 1, 1, kw)
        self.pad = (kw // 2, kw // 2, kh // 2, kh // 2)
        self.y = y
        self.mu_y = self.blur(y)
        self.mu_y2 = self.mu_y ** 2
        self.var_y = self.blur(y * y) - self.mu_y2
        scale = data_range.reshape(-1, 1, 1, 1)
        self.c1, self.c2 = (SSIM_K1 * scale) ** 2, (SSIM_K2 * scale) ** 2

    def blur(self, t: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted local mean per channel, reflect-padded to keep the map's size (a separable
        window: a pass along the rows, then one along the columns, ``k + k`` taps instead of ``k * k``)."""
        if any(self.pad):
            t = F.pad(t, self.pad, mode="reflect")
        channels = self.rows.shape[0]
        if self.rows.shape[2] > 1:
            t = F.conv2d(t, self.rows, groups=channels)
        if self.columns.shape[3] > 1:
            t = F.conv2d(t, self.columns, groups=channels)
        return t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` SSIM values of ``x`` (shaped like ``y``) against ``y``.

        The SSIM formula on the local statistics of ``x`` (mean, mean of ``x^2``, mean of ``x y``) has a
        hand-written backward (:class:`_SSIMFormula`).
        """
        x = _as_maps(x)
        return _SSIMFormula.apply(self.blur(x), self.blur(x * x), self.blur(x * self.y), self)


class _SSIMFormula(torch.autograd.Function):
    """``SSIM = (2 mu_x mu_y + c1)(2 cov + c2) / ((mu_x^2 + mu_y^2 + c1)(var_x + var_y + c2))`` from the
    local statistics ``mu_x``, ``E[x^2]``, ``E[x y]`` of ``x`` and the fixed ones of ``y``.

    The forward evaluates the same expression as autograd would; the backward is the closed form
    ``dS/dmu_x = S (2 mu_y / A1 - 2 mu_y / A2 - 2 mu_x / B1 + 2 mu_x / B2)``,
    ``dS/dE[x^2] = -S / B2``, ``dS/dE[x y] = 2 S / A2`` (``A1, A2`` the numerator's factors, ``B1, B2``
    the denominator's), which takes far fewer passes over the maps than autograd's chain of
    elementwise ops.
    """

    @staticmethod
    def forward(ctx, mu_x: torch.Tensor, ex2: torch.Tensor, exy: torch.Tensor,
                reference: "SSIMReference") -> torch.Tensor:
        mu_y, c1, c2 = reference.mu_y, reference.c1, reference.c2
        mu_x2, mu_xy = mu_x ** 2, mu_x * mu_y
        num1 = 2 * mu_xy + c1
        num2 = 2 * (exy - mu_xy) + c2
        den1 = mu_x2 + reference.mu_y2 + c1
        den2 = (ex2 - mu_x2) + reference.var_y + c2
        similarity = (num1 * num2) / (den1 * den2)
        ctx.save_for_backward(mu_x, num1, num2, den1, den2, similarity)
        ctx.reference = reference
        return similarity

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mu_x, num1, num2, den1, den2, similarity = ctx.saved_tensors
        two_mu_y = 2 * ctx.reference.mu_y
        two_mu_x = 2 * mu_x
        weighted = grad * similarity
        d_mu = weighted * (two_mu_y / num1 - two_mu_y / num2 - two_mu_x / den1 + two_mu_x / den2)
        d_ex2 = -weighted / den2
        d_exy = 2 * weighted / num2
        return d_mu, d_ex2, d_exy, None
