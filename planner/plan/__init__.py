"""Plans: the stack a user wants to run, the solver that places it on servers, and the saved plan file."""
