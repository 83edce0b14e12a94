"""The ``exactflow`` command line: one module per command, entry point :func:`main.main`.

Run it as ``exactflow`` (or ``python -m exactflow``); ``exactflow --help`` lists the commands.
"""
