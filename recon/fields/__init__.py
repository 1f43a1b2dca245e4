"""Neural field building blocks: multi-resolution hash-grid encodings and small MLP decoders."""

from recon.fields.hashgrid import (
    PRIMES,
    HashGridEncoding,
    HashGridLayout,
    grid_resolutions,
    hash_encode,
    hash_encode_reference,
)
from recon.fields.mlp import MLP, DeformationHeads, make_activation

__all__ = [
    "PRIMES",
    "HashGridEncoding",
    "HashGridLayout",
    "grid_resolutions",
    "hash_encode",
    "hash_encode_reference",
    "MLP",
    "DeformationHeads",
    "make_activation",
]
