"""The entities of the flights domain and their join keys."""

from feature_pipelines.features.spec import Entity

origin = Entity("origin", ("origin",), "A New York departure airport (EWR, JFK, LGA).")
route = Entity("route", ("origin", "dest"), "A directed airport pair flown from New York.")
carrier = Entity("carrier", ("carrier",), "An airline, by its two-letter code.")
aircraft = Entity("aircraft", ("tailnum",), "One aircraft, by its tail number.")
