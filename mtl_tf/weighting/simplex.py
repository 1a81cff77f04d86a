"""The probability simplex's projection and the regularised projected step on task
weights that MoCo and MoDo take (SDMGrad projects its inner steps)."""

import tensorflow as tf

from mtl_tf.weighting.base import state_variable


def uniform_weights(num_tasks):
    """The checkpointed task weights these methods start from, 1/T each."""
    return state_variable(tf.fill([num_tasks], 1.0 / num_tasks), name="weights")


def project_to_simplex(v):
    """The Euclidean projection of v onto the probability simplex (sort-based)."""
    t = v.shape[0]
    u = tf.sort(v, direction="DESCENDING")
    cumulative = tf.cumsum(u)
    index = tf.range(1, t + 1, dtype=v.dtype)
    valid = u - (cumulative - 1) / index > 0
    rho = tf.reduce_max(tf.where(valid, tf.range(t), 0))
    theta = (tf.gather(cumulative, rho) - 1) / tf.cast(rho + 1, v.dtype)
    return tf.maximum(v - theta, 0.0)


def weights_step(weights, product, gamma, rho):
    """Proj_simplex(weights - gamma (product + rho weights)), `product` = A weights for
    the (estimated) Gram matrix A: a projected gradient step on 1/2 w^T A w + rho/2 |w|^2."""
    return project_to_simplex(weights - gamma * (product + rho * weights))
