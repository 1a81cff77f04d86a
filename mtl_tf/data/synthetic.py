"""The MMoE paper's synthetic pair of regression tasks whose relatedness is controlled (Ma
et al., KDD 2018, Section 4.1).

Two orthogonal unit vectors u1, u2 in R^d; task weights w1 = c u1 and
w2 = c (p u1 + sqrt(1 - p^2) u2), so that cos(w1, w2) = p; inputs x ~ N(0, I_d); labels
y_k = w_k . x + sum_{i=1..m} sin(alpha_i w_k . x + beta_i) + eps, eps ~ N(0, 0.01).
The paper leaves c, m, alpha and beta open; Google Research's generator ("Simple
generator for synthetic multi-task data") gives c = 1, m = 10, alpha_i = i (1 to m),
beta_i = (i - 1)^2, and reads 0.01 as the noise's standard deviation: the values here.
The basis is the Q of a Gaussian matrix's QR decomposition, signs fixed, which is
uniform over orthonormal pairs as the generator's `ortho_group` is.
"""

import numpy as np


def task_pair(num_samples, correlation, dim=100, c=1.0, m=10, noise_std=0.01, seed=0):
    """`(x, y1, y2)`: num_samples x dim inputs and the two tasks' labels, float32."""
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"`correlation` must lie in [0, 1]. Received: correlation={correlation!r}")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"`dim` must be an integer of at least 2. Received: dim={dim!r}")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(dim, 2)))
    u1, u2 = (q * np.sign(np.diag(r))).T
    w1 = c * u1
    w2 = c * (correlation * u1 + np.sqrt(1 - correlation ** 2) * u2)
    alpha, beta = np.arange(1, m + 1), np.arange(m) ** 2
    x = rng.normal(size=(num_samples, dim))

    def labels(w):
        z = x @ w
        return z + np.sin(alpha * z[:, None] + beta).sum(axis=1) + rng.normal(0.0, noise_std, num_samples)

    return x.astype("float32"), labels(w1).astype("float32"), labels(w2).astype("float32")
