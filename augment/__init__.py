"""Hard-negative synthesis: asynchronous audio-video versions of accepted clips (paper C.2.4).

Every operation is a pair of pure functions: ``draw`` picks all random parameters from a
``numpy.random.Generator`` (seeded from the run seed and the clip id), ``apply`` produces the
negative from the clip and those parameters. Parameters are JSON-serialisable and recorded
with each negative, so any negative can be rebuilt exactly, offline or in a dataloader.
"""
