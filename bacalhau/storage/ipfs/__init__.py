"""storage/ipfs."""
