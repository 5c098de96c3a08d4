r"""Conversions between the parametrisations of a batch of Gaussians, written once.

Every function here is free, batched over L Gaussians and shape-checked. They
use GPflow's layout: a mean is stored as a column per Gaussian, ``[M, L]``, and
every matrix is stored as a stack ``[L, M, M]``.

Dimension letters (used throughout gpnat):

* ``N`` number of data points, ``B`` size of a minibatch,
* ``M`` number of inducing variables, ``D`` input dimension,
* ``L`` number of latent GPs (independent Gaussians in q(u)).

For one Gaussian N(m, S) the three standard coordinate systems are

* mean/Cholesky ξ = (m, L) with S = L Lᵀ, L lower triangular;
* natural θ₁ = S⁻¹ m, θ₂ = −½ S⁻¹;
* expectation η₁ = E[u] = m, η₂ = E[u uᵀ] = S + m mᵀ.

All matrices are formed through Cholesky factors and triangular solves; no
matrix is inverted explicitly. Functions that read a symmetric matrix
(θ₂, η₂) symmetrise it first, so that gradients with respect to it are
symmetric too.
"""
from typing import Tuple

import tensorflow as tf
from check_shapes import check_shapes

__all__ = [
    "matmul",
    "transpose",
    "symmetrise",
    "phi",
    "cholesky",
    "lower_of_transpose_product",
    "solve_upper_triangular",
    "reverse_cholesky",
    "meanchol_to_natural",
    "natural_to_meanchol",
    "meanchol_to_expectation",
    "expectation_to_meanchol",
    "natural_to_expectation",
    "expectation_to_natural",
    "meanchol_to_precision_cholesky",
    "precision_cholesky_to_meanchol",
    "is_valid_cholesky",
    "diag_meanstd_to_natural",
    "diag_natural_to_meanstd",
    "diag_meanstd_to_expectation",
    "diag_expectation_to_meanstd",
    "is_valid_diag",
]

Pair = Tuple[tf.Tensor, tf.Tensor]


def _col_to_batch(mean: tf.Tensor) -> tf.Tensor:
    """[M, L] -> [L, M, 1]."""
    return tf.linalg.adjoint(mean)[..., None]


def _batch_to_col(vec: tf.Tensor) -> tf.Tensor:
    """[L, M, 1] -> [M, L]."""
    return tf.linalg.adjoint(vec[..., 0])


def matmul(a: tf.Tensor, b: tf.Tensor, transpose_a: bool = False, transpose_b: bool = False) -> tf.Tensor:
    """``tf.linalg.matmul``, with a batch of one ``[1, M, K]`` multiplied as a single matrix.

    On CPU, TensorFlow's oneDNN kernel for a float32 *batched* product of small matrices
    costs about 18 µs per call at M = 20 against 6 µs for the same product in 2-D (30 against
    19 at M = 100, 2-core CPU), which made a float32 natural step at M = 20 three times as dear
    as a float64 one. float64 products are bitwise the same either way. Used for every product
    in gpnat's own maths (L = 1 latent GP is the common case).
    """
    ranks = [getattr(x.shape, "rank", len(x.shape)) for x in (a, b)]  # None: unknown rank
    if ranks == [3, 3] and a.shape[0] == 1 and b.shape[0] == 1:
        return tf.linalg.matmul(a[0], b[0], transpose_a=transpose_a, transpose_b=transpose_b)[None]
    return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)


#: Tensors whose transposes :func:`transpose` leaves to XLA on a CPU: more elements than the first
#: number, at most the second (per dtype; others as float64). TensorFlow's CPU Transpose kernel hands
#: a tensor above the first to its thread pool: on a 2-core CPU a [1, M, M] transpose then cost 59
#: to 98 µs from M = 49 in float64 and M = 50 in float32, where it had cost 1 to 2 µs, and XLA's
#: compiled one 16 to 31 µs up to M = 100 (float32: 12 to 36 µs up to M = 200). At M = 200 in
#: float64 and 300 in float32 XLA's was the slower (121 against 98 µs, 145 against 113), so
#: TensorFlow's is used there again (``benchmarks/TRANSPOSE.md``)
TRANSPOSE_BY_XLA = {"float64": (48 * 48, 100 * 100), "float32": (49 * 49, 200 * 200)}

#: one function for every shape: XLA compiles each shape it meets once (reduce_retracing keeps the trace general)
_xla_transpose = tf.function(lambda A: tf.linalg.adjoint(A), jit_compile=True, reduce_retracing=True)


def transpose(A: tf.Tensor) -> tf.Tensor:
    """Aᵀ over the last two axes (real A): ``tf.linalg.adjoint``, compiled by XLA on a CPU for
    tensors whose size (static shape) lies in :data:`TRANSPOSE_BY_XLA`, where TensorFlow's kernel
    pays its thread pool's overhead (``benchmarks/TRANSPOSE.md``). The same values either way;
    the natural step's closed form uses it for its M × M transposes."""
    n = A.shape.num_elements()
    above, up_to = TRANSPOSE_BY_XLA.get(A.dtype.name, TRANSPOSE_BY_XLA["float64"])
    if n is not None and above < n <= up_to and not tf.config.list_logical_devices("GPU"):
        return _xla_transpose(A)
    return tf.linalg.adjoint(A)


@check_shapes("A: [batch..., M, M]", "return: [batch..., M, M]")
def symmetrise(A: tf.Tensor) -> tf.Tensor:
    """½ (A + Aᵀ) over the last two axes."""
    return 0.5 * (A + tf.linalg.adjoint(A))


#: triangular products and solves split into 2 × 2 blocks from this size on (static M only).
#: In benchmarks/TRIANGULAR.md (2-core CPU) a natural step split from here took less time than
#: dense calls by 21 % (float64) and 2 % (float32) at M = 512, 35 % and 29 % at M = 1000, 43 %
#: and 40 % at M = 2000; below 384 splitting or not was within the timings' noise
SPLIT_FROM = 384


def _split(M) -> bool:
    return M is not None and M >= SPLIT_FROM


def _assemble(top_left, top_right, bottom_left, bottom_right):
    return tf.concat([tf.concat([top_left, top_right], -1), tf.concat([bottom_left, bottom_right], -1)], -2)


@check_shapes("A: [batch..., M, M]", "B: [batch..., M, M]", "return: [batch..., M, M]")
def lower_of_transpose_product(A: tf.Tensor, B: tf.Tensor) -> tf.Tensor:
    r"""The lower triangle of Aᵀ B, for lower-triangular A and B.

    A dense product costs 2M³ flops. With A = [[A₁₁, 0], [A₂₁, A₂₂]] and B
    alike, the lower triangle of Aᵀ B is
    [[low(A₁₁ᵀB₁₁) + low(A₂₁ᵀB₂₁), 0], [A₂₂ᵀB₂₁, low(A₂₂ᵀB₂₂)]], whose
    diagonal blocks recurse: about ⅔M³ flops for large M (``SPLIT_FROM``).
    A and B must be zero above the diagonal.
    """
    M = A.shape[-1]
    if not _split(M):
        return tf.linalg.band_part(matmul(A, B, transpose_a=True), -1, 0)
    h = M // 2
    top_left = lower_of_transpose_product(A[..., :h, :h], B[..., :h, :h]) + tf.linalg.band_part(
        matmul(A[..., h:, :h], B[..., h:, :h], transpose_a=True), -1, 0)
    bottom_left = matmul(A[..., h:, h:], B[..., h:, :h], transpose_a=True)
    bottom_right = lower_of_transpose_product(A[..., h:, h:], B[..., h:, h:])
    return _assemble(top_left, tf.zeros_like(A[..., :h, h:]), bottom_left, bottom_right)


@check_shapes("V: [batch..., M, M]", "W: [batch..., M, M]", "return: [batch..., M, M]")
def solve_upper_triangular(V: tf.Tensor, W: tf.Tensor) -> tf.Tensor:
    r"""V⁻¹ W for upper-triangular V and W (the result is upper triangular).

    A dense triangular solve costs M³ flops. With V = [[V₁₁, V₁₂], [0, V₂₂]]
    and W alike, V⁻¹W = [[V₁₁⁻¹W₁₁, V₁₁⁻¹(W₁₂ − V₁₂ V₂₂⁻¹W₂₂)], [0, V₂₂⁻¹W₂₂]],
    whose diagonal blocks recurse: about ⅓ fewer flops from one level on
    (``SPLIT_FROM``). Only the upper triangles of V and W are read.
    """
    M = V.shape[-1]
    if not _split(M):
        return tf.linalg.triangular_solve(V, tf.linalg.band_part(W, 0, -1), lower=False)
    h = M // 2
    bottom_right = solve_upper_triangular(V[..., h:, h:], W[..., h:, h:])
    top_left = solve_upper_triangular(V[..., :h, :h], W[..., :h, :h])
    top_right = tf.linalg.triangular_solve(
        V[..., :h, :h], W[..., :h, h:] - matmul(V[..., :h, h:], bottom_right), lower=False)
    return _assemble(top_left, top_right, tf.zeros_like(V[..., h:, :h]), bottom_right)


#: the Cholesky's reverse mode splits into 2 × 2 blocks from this size on (static M only), per
#: dtype (others as float64). In benchmarks/CHOLESKY.md (2-core CPU) a factorisation and its
#: gradient ran 1.6× (float64) and 1.5× (float32) as fast as TensorFlow's at M = 256, 2.5× and
#: 2.2× at M = 1000. At M = 192 float64 ran 1.6× as fast, float32 even (0.68× in one run of the
#: classic blocked form), hence float32's higher threshold
CHOLESKY_SPLIT_FROM = {"float64": 192, "float32": 256}


def cholesky_split_from(dtype) -> int:
    """The size from which :func:`cholesky`'s reverse mode splits into blocks, for ``dtype``."""
    return CHOLESKY_SPLIT_FROM.get(tf.as_dtype(dtype).name, CHOLESKY_SPLIT_FROM["float64"])


def phi(A: tf.Tensor) -> tf.Tensor:
    """Φ(A): the lower triangle of A with its diagonal halved (as in the Cholesky's derivatives)."""
    return tf.linalg.band_part(A, -1, 0) - 0.5 * tf.linalg.diag(tf.linalg.diag_part(A))


def _sym_congruence_dense(L: tf.Tensor, P: tf.Tensor) -> tf.Tensor:
    """sym(L⁻ᵀ P L⁻¹) by two triangular solves (no inverse)."""
    Y = tf.linalg.triangular_solve(L, P, lower=True, adjoint=True)  # L⁻ᵀ P
    X = tf.linalg.triangular_solve(L, tf.linalg.adjoint(Y), lower=True, adjoint=True)  # Xᵀ = L⁻ᵀ Yᵀ
    return symmetrise(X)


def _cholesky_reverse_dense(L: tf.Tensor, L_bar: tf.Tensor) -> tf.Tensor:
    """Ā = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹), by two triangular solves (no inverse)."""
    return _sym_congruence_dense(L, phi(matmul(L, L_bar, transpose_a=True)))


def _reverse_step(L: tf.Tensor, L21_bar: tf.Tensor, S_bar: tf.Tensor, P11: tf.Tensor) -> tf.Tensor:
    """One level of the block recursion, given S̄, L̄₂₁ = L₂₂⁻ᵀP₂₁ and P₁₁ (see :func:`_cholesky_reverse`)."""
    M = L.shape[-1]
    h, n = M // 2, M - M // 2
    L11, L21 = L[..., :h, :h], L[..., h:, :h]
    # K = L₂₁L₁₁⁻¹ and B = L̄₂₁L₁₁⁻¹ by one solve
    both = tf.linalg.adjoint(tf.linalg.triangular_solve(
        L11, tf.linalg.adjoint(tf.concat([L21, L21_bar], -2)), lower=True, adjoint=True))
    K, B = both[..., :n, :], both[..., n:, :]
    SK = matmul(S_bar, K)
    X21 = B - SK  # the 21 block of L⁻ᵀ P L⁻¹
    A21 = 0.5 * B - SK  # the 21 block of its symmetric part
    A11 = _sym_congruence(L11, P11) - symmetrise(matmul(K, X21, transpose_a=True))
    return _assemble(A11, tf.linalg.adjoint(A21), A21, S_bar)


def _sym_congruence(L: tf.Tensor, P: tf.Tensor) -> tf.Tensor:
    """sym(L⁻ᵀ P L⁻¹) for lower-triangular L and P, by 2 × 2 blocks from ``cholesky_split_from`` on."""
    M = L.shape[-1]
    if M < cholesky_split_from(L.dtype):
        return _sym_congruence_dense(L, P)
    h = M // 2
    L22 = L[..., h:, h:]
    S_bar = _sym_congruence(L22, P[..., h:, h:])
    L21_bar = tf.linalg.triangular_solve(L22, P[..., h:, :h], lower=True, adjoint=True)
    return _reverse_step(L, L21_bar, S_bar, P[..., :h, :h])


def _cholesky_reverse(L: tf.Tensor, L_bar: tf.Tensor) -> tf.Tensor:
    r"""The symmetric gradient Ā of a loss with respect to A, given L = chol(A) and L̄ = ∂loss/∂L.

    Ā = sym(L⁻ᵀ P L⁻¹) with P = Φ(Lᵀ L̄) (Φ: the lower triangle, its diagonal
    halved). With L = [[L₁₁, 0], [L₂₁, L₂₂]] and K = L₂₁ L₁₁⁻¹, the blocks of
    X = L⁻ᵀ P L⁻¹ are X₂₂ = L₂₂⁻ᵀ P₂₂ L₂₂⁻¹, X₂₁ = (L₂₂⁻ᵀ P₂₁ − X₂₂ L₂₁) L₁₁⁻¹,
    X₁₂ = −Kᵀ X₂₂ and X₁₁ = L₁₁⁻ᵀ P₁₁ L₁₁⁻¹ − Kᵀ X₂₁. So, with S̄ = sym(X₂₂)
    and L̄₂₁ = L₂₂⁻ᵀ P₂₁ (here exactly the 21 block of L̄, since P₂₁ = L₂₂ᵀ L̄₂₁),

    * S̄ = sym(L₂₂⁻ᵀ P₂₂ L₂₂⁻¹), with P₂₂ = Φ(L₂₂ᵀ L̄₂₂);
    * Ā₂₁ = ½ L̄₂₁ L₁₁⁻¹ − S̄ K;
    * Ā₁₁ = sym(L₁₁⁻ᵀ P₁₁ L₁₁⁻¹) − sym(Kᵀ X₂₁), with P₁₁ = Φ(L₁₁ᵀ L̄₁₁ + L₂₁ᵀ L̄₂₁);

    and Ā = [[Ā₁₁, Ā₂₁ᵀ], [Ā₂₁, S̄]]. The two congruences recurse; the rest is
    products and triangular solves of half the size, about 1.5M³ flops
    against the 7M³ of TensorFlow's registered gradient (an explicit inverse
    and three dense products). Keeping the correction Kᵀ X₂₁ out of the
    recursion on L₁₁ matters: folded into its P (as L̄₁₁ − Ā₂₁ᵀ L₂₁, the
    classic blocked form), the gradient lost up to three digits against
    TensorFlow's where cond(A) ≳ 1e7 (``benchmarks/CHOLESKY_ACCURACY.md``).
    Only the lower triangle of L̄ is read, as there.
    """
    M = L.shape[-1]
    if M < cholesky_split_from(L.dtype):
        return _cholesky_reverse_dense(L, L_bar)
    h = M // 2
    L_bar = tf.linalg.band_part(L_bar, -1, 0)
    L11, L21, L22 = L[..., :h, :h], L[..., h:, :h], L[..., h:, h:]
    S_bar = _cholesky_reverse(L22, L_bar[..., h:, h:])
    L21_bar = L_bar[..., h:, :h]
    P11 = phi(lower_of_transpose_product(L11, L_bar[..., :h, :h]) + matmul(L21, L21_bar, transpose_a=True))
    return _reverse_step(L, L21_bar, S_bar, P11)


@tf.custom_gradient
def _cholesky(A: tf.Tensor):
    L = tf.linalg.cholesky(A)

    def grad(L_bar):
        return _cholesky_reverse(L, L_bar)

    return L, grad


@check_shapes("A: [batch..., M, M]", "return: [batch..., M, M]")
def cholesky(A: tf.Tensor) -> tf.Tensor:
    r"""``tf.linalg.cholesky(A)``, the same forward op, with a cheaper reverse mode.

    The gradient (:func:`_cholesky_reverse`) is TensorFlow's to round-off for a
    well-conditioned A, and as close to finite differences as TensorFlow's up
    to cond(A) ≈ 3e8 (``benchmarks/CHOLESKY_ACCURACY.md``), but splits into
    2 × 2 blocks from ``CHOLESKY_SPLIT_FROM`` on (M = 192 in float64, 256 in
    float32) and never forms an inverse; at M = 1000 a Cholesky and its
    gradient take about 40 % of the time (``benchmarks/CHOLESKY.md``). It is
    built from differentiable ops on L = chol(A), so second derivatives and
    forward mode (reverse mode twice) stay exact. Below the threshold (or
    with M unknown when traced) it is ``tf.linalg.cholesky`` itself,
    gradient included (there splitting lost in float32 at M = 128 and 192).
    The models use it for K_uu, whose gradient reaches every kernel
    hyperparameter in every iteration.
    """
    M = A.shape[-1]
    if M is None or M < cholesky_split_from(A.dtype):
        return tf.linalg.cholesky(A)
    return _cholesky(A)


@check_shapes("A: [batch..., M, M]", "return: [batch..., M, M]")
def reverse_cholesky(A: tf.Tensor) -> tf.Tensor:
    r"""Lower-triangular R with A⁻¹ = R Rᵀ, from one Cholesky and one triangular solve.

    With J the reversal permutation, let U = chol(J A J), so A = (J U J)(J U J)ᵀ
    with J U J upper triangular. Then A⁻¹ = (J U⁻ᵀ J)(J U⁻ᵀ J)ᵀ and
    R = J U⁻ᵀ J is lower triangular with a positive diagonal.
    If A is not positive definite the result contains NaN or inf
    (see :func:`is_valid_cholesky`).
    """
    flipped = tf.reverse(A, axis=[-2, -1])
    U = cholesky(flipped)
    eye = tf.eye(tf.shape(A)[-1], batch_shape=tf.shape(A)[:-2], dtype=A.dtype)
    U_inv_T = solve_upper_triangular(tf.linalg.adjoint(U), eye)  # U⁻ᵀ, upper
    return tf.reverse(U_inv_T, axis=[-2, -1])


@check_shapes(
    "q_mu: [M, L]",
    "q_sqrt: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def meanchol_to_natural(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
    """(m, L) -> (θ₁ = S⁻¹m, θ₂ = −½S⁻¹) with S = L Lᵀ."""
    q_sqrt = tf.linalg.band_part(q_sqrt, -1, 0)
    eye = tf.eye(tf.shape(q_sqrt)[-1], batch_shape=tf.shape(q_sqrt)[:-2], dtype=q_sqrt.dtype)
    L_inv = tf.linalg.triangular_solve(q_sqrt, eye, lower=True)  # L⁻¹
    S_inv = matmul(L_inv, L_inv, transpose_a=True)  # L⁻ᵀ L⁻¹
    theta_1 = _batch_to_col(matmul(S_inv, _col_to_batch(q_mu)))
    return theta_1, -0.5 * S_inv


@check_shapes(
    "theta_1: [M, L]",
    "theta_2: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def natural_to_meanchol(theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
    """(θ₁, θ₂) -> (m = S θ₁, L) with S = (−2θ₂)⁻¹ = L Lᵀ."""
    L = reverse_cholesky(-2.0 * symmetrise(theta_2))
    Lt_theta = matmul(L, _col_to_batch(theta_1), transpose_a=True)
    return _batch_to_col(matmul(L, Lt_theta)), L


@check_shapes(
    "q_mu: [M, L]",
    "q_sqrt: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def meanchol_to_expectation(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
    """(m, L) -> (η₁ = m, η₂ = L Lᵀ + m mᵀ)."""
    q_sqrt = tf.linalg.band_part(q_sqrt, -1, 0)
    m = _col_to_batch(q_mu)
    eta_2 = matmul(q_sqrt, q_sqrt, transpose_b=True) + matmul(
        m, m, transpose_b=True
    )
    return q_mu, eta_2


@check_shapes(
    "eta_1: [M, L]",
    "eta_2: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def expectation_to_meanchol(eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
    """(η₁, η₂) -> (m = η₁, L = chol(η₂ − η₁η₁ᵀ))."""
    m = _col_to_batch(eta_1)
    S = symmetrise(eta_2) - matmul(m, m, transpose_b=True)
    return eta_1, cholesky(S)


@check_shapes(
    "theta_1: [M, L]",
    "theta_2: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def natural_to_expectation(theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
    """(θ₁, θ₂) -> (η₁ = m, η₂ = S + m mᵀ), through the Cholesky factor of S."""
    return meanchol_to_expectation(*natural_to_meanchol(theta_1, theta_2))


@check_shapes(
    "eta_1: [M, L]",
    "eta_2: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def expectation_to_natural(eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
    """(η₁, η₂) -> (θ₁ = S⁻¹η₁, θ₂ = −½S⁻¹) with S = η₂ − η₁η₁ᵀ."""
    return meanchol_to_natural(*expectation_to_meanchol(eta_1, eta_2))


@check_shapes(
    "q_mu: [M, L]",
    "q_sqrt: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def meanchol_to_precision_cholesky(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
    """(m, L) -> (m, R) with S⁻¹ = R Rᵀ, R lower triangular."""
    q_sqrt = tf.linalg.band_part(q_sqrt, -1, 0)
    S = matmul(q_sqrt, q_sqrt, transpose_b=True)
    return q_mu, reverse_cholesky(S)


@check_shapes(
    "q_mu: [M, L]",
    "prec_sqrt: [L, M, M]",
    "return[0]: [M, L]",
    "return[1]: [L, M, M]",
)
def precision_cholesky_to_meanchol(q_mu: tf.Tensor, prec_sqrt: tf.Tensor) -> Pair:
    """(m, R) -> (m, L) with S = (R Rᵀ)⁻¹ = L Lᵀ."""
    prec_sqrt = tf.linalg.band_part(prec_sqrt, -1, 0)
    precision = matmul(prec_sqrt, prec_sqrt, transpose_b=True)
    return q_mu, reverse_cholesky(precision)


@check_shapes("q_mu: [M, L]", "q_sqrt: [L, M, M]", "return: []")
def is_valid_cholesky(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> tf.Tensor:
    """True where (m, L) describes a proper Gaussian: everything finite, diag(L) ≠ 0.

    TensorFlow's Cholesky returns NaN (it does not raise) on a matrix that is not
    positive definite, so this check, run on the output of a conversion, detects
    invalid states inside compiled code as well as eagerly.
    """
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(q_mu)), tf.reduce_all(tf.math.is_finite(q_sqrt))
    )
    nonsingular = tf.reduce_all(tf.linalg.diag_part(q_sqrt) != 0)
    return tf.logical_and(finite, nonsingular)


# ----------------------------------------------------------------------------
# The diagonal (mean-field) family: M·L independent univariate Gaussians.
#
# gpflow's ``q_diag`` layout: the mean and the standard deviations are both
# ``[M, L]``. A diagonal q(u) is its own exponential family, with natural
# parameters θ₁ = m / s², θ₂ = −1 / (2 s²) and expectation parameters
# η₁ = m, η₂ = s² + m², all elementwise; its natural gradient is not a
# projection of the full family's.
# ----------------------------------------------------------------------------
@check_shapes("q_mu: [M, L]", "q_sqrt: [M, L]", "return[0]: [M, L]", "return[1]: [M, L]")
def diag_meanstd_to_natural(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
    """(m, s) -> (θ₁ = m / s², θ₂ = −1 / (2 s²)), elementwise."""
    precision = tf.math.reciprocal(tf.square(q_sqrt))
    return q_mu * precision, -0.5 * precision


@check_shapes("theta_1: [M, L]", "theta_2: [M, L]", "return[0]: [M, L]", "return[1]: [M, L]")
def diag_natural_to_meanstd(theta_1: tf.Tensor, theta_2: tf.Tensor) -> Pair:
    """(θ₁, θ₂) -> (m = θ₁ s², s = (−2θ₂)^(−½)); NaN where −2θ₂ ≤ 0."""
    variance = tf.math.reciprocal(-2.0 * theta_2)
    return theta_1 * variance, tf.sqrt(tf.where(variance > 0, variance, float("nan")))


@check_shapes("q_mu: [M, L]", "q_sqrt: [M, L]", "return[0]: [M, L]", "return[1]: [M, L]")
def diag_meanstd_to_expectation(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> Pair:
    """(m, s) -> (η₁ = m, η₂ = s² + m²), elementwise."""
    return q_mu, tf.square(q_sqrt) + tf.square(q_mu)


@check_shapes("eta_1: [M, L]", "eta_2: [M, L]", "return[0]: [M, L]", "return[1]: [M, L]")
def diag_expectation_to_meanstd(eta_1: tf.Tensor, eta_2: tf.Tensor) -> Pair:
    """(η₁, η₂) -> (m = η₁, s = (η₂ − η₁²)^½); NaN where η₂ − η₁² ≤ 0."""
    variance = eta_2 - tf.square(eta_1)
    return eta_1, tf.sqrt(tf.where(variance > 0, variance, float("nan")))


@check_shapes("q_mu: [M, L]", "q_sqrt: [M, L]", "return: []")
def is_valid_diag(q_mu: tf.Tensor, q_sqrt: tf.Tensor) -> tf.Tensor:
    """True where (m, s) describes a proper diagonal Gaussian: everything finite, s ≠ 0."""
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(q_mu)), tf.reduce_all(tf.math.is_finite(q_sqrt))
    )
    return tf.logical_and(finite, tf.reduce_all(q_sqrt != 0))
