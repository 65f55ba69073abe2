"""Ioffe & Szegedy 2015 (Batch Normalization): Fig 1 (MNIST MLP) and Fig 2/3 (learning-rate tolerance)."""
