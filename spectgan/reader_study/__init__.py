"""A reader study (visual Turing test) of real against synthetic slices: ``spectgan reader-study create | serve |
analyze``. The study folder's layout is in ``spectgan.reader_study.study``."""
