"""The label-free shift check: is a new cohort (or case) inside the range of the internal data?

:mod:`.features` turns a case's model-input crop into image statistics; :mod:`.check` measures
how far a cohort's statistics and score distribution sit from the internal ones, against the
spread seen when internal parts are held out as if they were new.
"""
