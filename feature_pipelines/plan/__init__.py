"""A plan before a change ships: the working tree's feature definitions against the ones that
produced the tables (recorded with each materialization) or the committed lock, with each changed
feature's effect on values, drift, consumers and dtypes, and the breaking verdict CI enforces.
"""
