"""Local SSIM (Wang et al. 2004) with a closed-form backward, and the softmax used by the paper's losses."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["relevance_softmax", "softmax_backward", "ssim_window", "ssim_map", "SSIMReference"]

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


def softmax_backward(gradient: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to the input of :func:`relevance_softmax`, given its ``output`` and the
    ``gradient`` with respect to that output (the kernel autograd uses for softmax)."""
    if output.dim() <= 2:
        return torch._softmax_backward_data(gradient, output, output.dim() - 1, output.dtype)
    flat = torch._softmax_backward_data(gradient.flatten(2), output.flatten(2), 2, output.dtype)
    return flat.view_as(output)


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


#: The fast SSIM gradient works on chunks of channels of about this many values, so that the dozens of
#: passes over a chunk's maps stay in the processor's cache ...
CHUNK_VALUES = 2 ** 18
#: ... in multiples of this many channels (at least one): in the channels-last layout the blur's passes run
#: along the channels, 16 float32 values to a vector register (VGG16's 224 x 224 maps: 16 channels).
CHUNK_CHANNELS = 16


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
        scale = data_range.reshape(-1, 1, 1, 1)
        self.c1, self.c2 = (SSIM_K1 * scale) ** 2, (SSIM_K2 * scale) ** 2
        self._kernels: dict = {}
        self._whole: Optional[tuple] = None  # mu_y, mu_y^2, var_y of the whole map (made on first use)
        self._parts: Optional[list] = None  # per chunk of channels: slice, y, mu_y, mu_y^2 + c1, var_y + c2

    @property
    def mu_y(self) -> torch.Tensor:
        """``(B, C, H, W)`` local mean of ``y``."""
        return self._statistics()[0]

    @property
    def mu_y2(self) -> torch.Tensor:
        """``(B, C, H, W)`` its square."""
        return self._statistics()[1]

    @property
    def var_y(self) -> torch.Tensor:
        """``(B, C, H, W)`` local variance of ``y``."""
        return self._statistics()[2]

    def _statistics(self) -> tuple:
        if self._whole is None:
            mu = self.blur(self.y)
            square = mu ** 2
            self._whole = (mu, square, self.blur(self.y * self.y) - square)
        return self._whole

    def _chunks(self) -> list:
        """Per chunk of channels (:data:`CHUNK_VALUES`, :data:`CHUNK_CHANNELS`), in the channels-last layout:
        ``(slice, y reflect-padded, y, mu_y, mu_y^2 + c1, var_y + c2)``."""
        if self._parts is None:
            channels, size = self.y.shape[1], self.y.shape[2] * self.y.shape[3]
            step = max(1, CHUNK_VALUES // max(size, 1)) // CHUNK_CHANNELS * CHUNK_CHANNELS or CHUNK_CHANNELS
            self._parts = []
            for first in range(0, channels, step):
                part = slice(first, min(first + step, channels))
                padded, y = self._padded(self.y[:, part])
                mu = self._passes(padded)
                square = mu * mu
                shifted_var = self._passes(padded * padded).sub_(square).add_(self.c2)
                self._parts.append((part, padded, y, mu, square.add_(self.c1), shifted_var))
        return self._parts

    def _padded(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``t`` reflect-padded for the window, in the channels-last layout, and the view of ``t`` inside it.
        (Padding commutes with elementwise products, so the products of padded maps are padded products:
        one padding per map instead of one per blur; and the padding is done in the standard layout, where
        its kernel is about four times as fast.)"""
        if not any(self.pad):
            t = t.contiguous(memory_format=torch.channels_last)
            return t, t
        padded = F.pad(t, self.pad, mode="reflect").contiguous(memory_format=torch.channels_last)
        (left, _, top, _), (height, width) = self.pad, t.shape[2:]
        return padded, padded[:, :, top:top + height, left:left + width]

    def _window(self, groups: int, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The row and column kernels for ``groups`` channels (made once per count and layout)."""
        if groups == self.rows.shape[0] and not channels_last:
            return self.rows, self.columns
        key = (groups, channels_last)
        if key not in self._kernels:
            layout = torch.channels_last if channels_last else torch.contiguous_format
            self._kernels[key] = tuple(kernel[:1].expand(groups, -1, -1, -1).contiguous(memory_format=layout)
                                       for kernel in (self.rows, self.columns))
        return self._kernels[key]

    def _passes(self, t: torch.Tensor) -> torch.Tensor:
        """The window's two valid 1-D passes (rows, then columns), in ``t``'s layout."""
        channels = t.shape[1]
        rows, columns = self._window(channels, t.is_contiguous(memory_format=torch.channels_last)
                                     and not t.is_contiguous())
        if rows.shape[2] > 1:
            t = F.conv2d(t, rows, groups=channels)
        if columns.shape[3] > 1:
            t = F.conv2d(t, columns, groups=channels)
        return t

    def blur(self, t: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted local mean per channel, reflect-padded to keep the map's size (a separable
        window: a pass along the rows, then one along the columns, ``k + k`` taps instead of ``k * k``).
        ``t`` may have any number of channels (each blurred alone), in either layout (the channels-last
        one is about twice as fast: the passes then run along the channels)."""
        if any(self.pad):
            t = F.pad(t, self.pad, mode="reflect")
        return self._passes(t)

    def blur_transposed(self, g: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`blur`: ``<blur(t), g> = <t, blur_transposed(g)>`` for every ``t``.

        The adjoint of a valid pass is the full one, and the window is symmetric, so it is the same pass on
        ``g`` zero-padded by ``k - 1`` (padded by the convolution itself); then the reflect padding's adjoint
        folds the border back (:func:`_fold_reflection`)."""
        channels = g.shape[1]
        rows, columns = self._window(channels, g.is_contiguous(memory_format=torch.channels_last)
                                     and not g.is_contiguous())
        kh, kw = rows.shape[2], columns.shape[3]
        if kh > 1:
            g = F.conv2d(g, rows, padding=(kh - 1, 0), groups=channels)
        if kw > 1:
            g = F.conv2d(g, columns, padding=(0, kw - 1), groups=channels)
        return _fold_reflection(g, kh // 2, kw // 2)

    def value_and_gradient(self, x: torch.Tensor, weight: torch.Tensor,
                           softmax: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The SSIM map of ``x`` summed per sample, and the gradient of ``sum_b weight_b * that sum``, by hand.

        The same formula as :meth:`__call__` and its backward (:class:`_SSIMFormula`), computed without
        autograd: chunk by chunk of channels (each channel's SSIM is its own, so the result does not depend
        on the chunks; a chunk's maps stay in the cache), in the channels-last layout, with the elementwise
        work in place on few buffers. Equal to autograd's result up to the rounding of reordered products
        and sums.

        Parameters
        ----------
        x : torch.Tensor
            Shaped like ``y`` (as given to the constructor).
        weight : torch.Tensor
            ``(B,)`` the derivative of the loss with respect to every value of the sample's SSIM map.
        softmax : bool
            Compare :func:`relevance_softmax` of ``x`` instead (the gradient is then with respect to ``x``).

        Returns
        -------
        value : torch.Tensor
            ``(B,)`` sum of the SSIM map per sample.
        gradient : torch.Tensor
            Of ``x``'s shape.
        """
        shape, x = x.shape, _as_maps(x)
        twice = (2 * weight).reshape(-1, 1, 1, 1)
        value = x.new_zeros(x.shape[0])
        gradient = torch.empty_like(x)
        for part, padded_y, y, mu_y, shifted_mu2, shifted_var in self._chunks():
            given = x[:, part]
            if softmax:
                given = given.flatten(2).softmax(dim=-1).view_as(given)
            padded, p = self._padded(given)
            mu_x = self._passes(padded)
            num1 = torch.addcmul(self.c1, mu_x, mu_y, value=2)
            num2 = torch.add(self.c2, self._passes(padded * padded_y).addcmul_(mu_x, mu_y, value=-1), alpha=2)
            mu_x2 = mu_x * mu_x
            den2 = self._passes(padded * padded).sub_(mu_x2).add_(shifted_var)
            del padded
            den1 = mu_x2.add_(shifted_mu2)
            similarity = num1 * num2
            similarity.div_(den1 * den2)
            value += similarity.flatten(1).sum(dim=1)
            # h = 2 w S; dL/dE[xy] = h / A2, dL/dE[x^2] = -h / (2 B2), dL/dmu_x = mu_y (h / A1 - h / A2)
            # + mu_x (h / B2 - h / B1) (A1, A2 the numerator's factors, B1, B2 the denominator's)
            h = similarity.mul_(twice)
            d_exy = torch.div(h, num2)
            by_den2 = torch.div(h, den2)
            d_mu = torch.div(h, num1).sub_(d_exy).mul_(mu_y)
            d_mu.addcmul_(torch.div(h, den1).sub_(by_den2), mu_x, value=-1)
            del h, num1, num2, den1, den2, similarity, mu_x
            pulled = self.blur_transposed(d_mu)
            pulled.addcmul_(p, self.blur_transposed(by_den2), value=-1)
            pulled.addcmul_(y, self.blur_transposed(d_exy))
            if softmax:
                pulled = softmax_backward(pulled.contiguous().flatten(2), given.flatten(2)).view_as(given)
            gradient[:, part] = pulled
        return value, gradient.view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` SSIM values of ``x`` (shaped like ``y``) against ``y``.

        The SSIM formula on the local statistics of ``x`` (mean, mean of ``x^2``, mean of ``x y``) has a
        hand-written backward (:class:`_SSIMFormula`).
        """
        x = _as_maps(x)
        return _SSIMFormula.apply(self.blur(x), self.blur(x * x), self.blur(x * self.y), self)


def _fold_reflection(padded: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """The adjoint of ``F.pad(t, (columns, columns, rows, rows), mode='reflect')``: each padded value added
    back onto the value it mirrors (in place on ``padded``; the result is a view of it). The padded strips
    are copied once (``flip``), then added: far less work than ``reflection_pad2d_backward``'s kernel."""
    height, width = padded.shape[2] - 2 * rows, padded.shape[3] - 2 * columns
    if columns:  # columns -c..-1 mirror 1..c, columns W..W+c-1 mirror W-2..W-1-c
        padded[..., columns + 1:2 * columns + 1] += padded[..., :columns].flip(-1)
        padded[..., width - 1:width + columns - 1] += padded[..., width + columns:].flip(-1)
        padded = padded[..., columns:columns + width]
    if rows:
        padded[..., rows + 1:2 * rows + 1, :] += padded[..., :rows, :].flip(-2)
        padded[..., height - 1:height + rows - 1, :] += padded[..., height + rows:, :].flip(-2)
        padded = padded[..., rows:rows + height, :]
    return padded


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
