"""Placeholder: replaced by its owner's implementation before this lands."""

from search.cli._common import UserError


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    raise UserError("this command is being built")
