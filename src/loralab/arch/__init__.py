"""Model architectures without weights: resolve a config, introspect it on the meta device, cache the record.

`loralab.arch.cache.get_arch_record` is the entry point; importing this package imports no torch.
"""
