"""The right to be forgotten: erase one entity from every store, keep it out, and prove it is gone."""
