"""The documentation site's generators: everything under ``docs/`` that is made from the code
rather than written by hand.

* :mod:`gen.hooks`: the MkDocs entry point (``hooks:`` in ``mkdocs.yml``); on every build it adds
  the generated pages and figures to the site (nothing generated is committed).
* :mod:`gen.cli_reference`: every ``tanet`` command and flag, from ``tanet.cli.build_parser()``.
* :mod:`gen.config_reference`: every config key with its default and its comment, from
  ``tanet/config/schema.py``.
* :mod:`gen.weights_reference`: the published weights table, from the registry.
* :mod:`gen.layout_reference`: the layout rules, read from ``tests/test_packaging.py``.
* :mod:`gen.figures`: the concept pages' diagrams and plots, drawn from the real modules.
* :mod:`gen.fences`: the fenced examples of the pages and their checks (``tests/test_docs.py``).

The package is imported with ``docs/`` on ``sys.path`` (the hook and the tests put it there);
``mkdocs.yml`` keeps ``gen/`` out of the site.
"""
