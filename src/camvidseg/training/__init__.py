"""Training through an MMEngine Runner: the train stage, networks, resume, multi-process launch,
allocator.
"""
