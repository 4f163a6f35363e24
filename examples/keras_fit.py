"""A Keras model trained with ``model.fit`` whose last layer is an optimization layer.

Features go through a Dense layer to scores; the last layer projects the
scores onto the probability simplex (sparsemax, a QP). The model learns to
put its mass on the right class; the script prints the loss per epoch.

Run:  python examples/keras_fit.py [--full]
"""

from __future__ import annotations

import argparse

import cvxpy as cp
import numpy as np


def main(full: bool = False) -> list[float]:
    import keras

    from conelayers.tensorflow import KerasCvxpyLayer

    keras.utils.set_random_seed(0)  # the Dense layer's initial weights: a reproducible run
    rng = np.random.default_rng(0)
    classes, features, samples, epochs = (5, 8, 512, 20) if full else (3, 4, 64, 6)
    z = cp.Parameter(classes)
    p = cp.Variable(classes)
    simplex = cp.Problem(cp.Minimize(cp.sum_squares(p - z)), [cp.sum(p) == 1, p >= 0])

    inputs = keras.Input(shape=(features,), dtype="float32")
    scores = keras.layers.Dense(classes)(inputs)
    probs = KerasCvxpyLayer(simplex, [z], [p])(scores)
    model = keras.Model(inputs, probs)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")

    X = rng.standard_normal((samples, features)).astype(np.float32)
    labels = np.argmax(X @ rng.standard_normal((features, classes)), axis=1)
    Y = np.eye(classes, dtype=np.float32)[labels]
    history = model.fit(X, Y, epochs=epochs, batch_size=32, verbose=0)
    for epoch, loss in enumerate(history.history["loss"]):
        print(f"epoch {epoch:3d}  loss {loss:.4f}")
    accuracy = float(np.mean(np.argmax(model.predict(X, verbose=0), 1) == labels))
    print(f"training accuracy: {accuracy:.2f}")
    return history.history["loss"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more data and epochs")
    main(parser.parse_args().full)
