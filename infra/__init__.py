"""Infrastructure the workshop runs on, apart from the lessons: the offline stand-in, the fault proxy, a background server.

Nothing here imports the lesson code (helpers/), and the lesson helpers import nothing from here.
"""
