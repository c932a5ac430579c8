"""Automatic canonization by graph tracing, and the coverage check of the rule-based methods.

One concept per module:

- :mod:`~learnroot.graph.ops`: what each function/method call means for relevance (the tables);
- :mod:`~learnroot.graph.trace`: ``torch.fx`` tracing; which nodes carry relevance, which are on the path;
- :mod:`~learnroot.graph.fold`: BatchNorm folded into the Linear/Conv layer next to it;
- :mod:`~learnroot.graph.rewrite`: shared call sites split, identities dropped, sums, concatenations,
  gates, functional activations and poolings made explicit layers;
- :mod:`~learnroot.graph.coverage`: the check that every operation on the path has a rule, and its
  one-line error :class:`UnsupportedOperations`;
- :mod:`~learnroot.graph.fallback`: module hooks for models ``torch.fx`` cannot trace, checked at
  every forward pass;
- :mod:`~learnroot.graph.canonize`: the whole, :func:`canonize` -> :class:`Canonized`.
"""
from .canonize import Canonized, canonize
from .coverage import Uncovered, UnsupportedOperations
from .rewrite import display_name, stack_operands
from .trace import TraceFailed, trace

__all__ = ["Canonized", "canonize", "Uncovered", "UnsupportedOperations", "display_name", "stack_operands",
           "TraceFailed", "trace"]
