"""Instruction grammar of OpenPortal 0.32.2: identifiers, values, instructions and results."""
