"""One decoding loop per family; methods plug into them."""
