"""Reports of run folders: the tables of ``learnroot-table`` and the HTML page of ``learnroot-report``.

One pipeline, shared by both commands (and by ``learnroot-figures`` for reading runs):

1. read      :mod:`.runs` (run folders: identity, status, numbers), :mod:`.files` (the files inside
             one run folder: ``per_sample.csv``, ``curves.csv``, relevance arrays)
2. decide    :mod:`.decide` (one run per configuration, row labels, metric columns, directions from
             the metric registry, best values), :mod:`.shards` (the shards of a configuration merged
             into one run), :mod:`.paired` (paired differences with bootstrap intervals)
3. build     :mod:`.build` (tidy, pivot and paired frames), :mod:`.gallery` (image rows and thumbnails),
             :mod:`.charts` (mean curves with bands, layer-wise conservation)
4. render    :mod:`.render` (Markdown, LaTeX), :mod:`.html` with :mod:`.svg` (the HTML page)

The command lines are :mod:`.table` (``learnroot-table``) and :mod:`.cli` (``learnroot-report``).
Reports read run folders only, never the runner.
"""
