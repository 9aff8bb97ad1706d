"""The report step: what studies found, drawn from the runs' data into one HTML page (build.py),
its figures (figures.py) and the page itself (html.py). Stages write data; only this draws."""
