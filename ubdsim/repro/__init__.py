"""`ubdsim repro`: a library of COW corruption scenarios, each one small data file.

This package owns the scenario format (model.py: steps that are host shell commands or guest
scripts, the output each must show, the exit status each must give), the catalogue of
scenarios (scenarios/, one module each), and the runner (runner.py) that makes the damage in
a fresh directory, shows it with ubdsim's and the real tools' own output, and then runs the
safe way in a second fresh directory. The runner decides nothing about the kernel itself:
guest steps go through a backend (`ubdsim run` here; the tests plug in linux.uml through the
oracle launcher), so one scenario text is judged by both.
"""
