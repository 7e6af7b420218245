"""What every stage uses: params schema, errors, paths, atomic writes, Arrow directories."""
