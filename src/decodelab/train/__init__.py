"""Recipes for the small trained parts some methods need (acceptance heads, ...), each with a
`decodelab train ...` command (train.cli)."""
