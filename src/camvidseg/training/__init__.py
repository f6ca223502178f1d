"""Training through an MMEngine Runner: the train stage, the network records and the networks
built from them, resume, multi-process launch, allocator.
"""
