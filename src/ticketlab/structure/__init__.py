"""Structure procedures: physically smaller networks (surgery) and their size counts."""
