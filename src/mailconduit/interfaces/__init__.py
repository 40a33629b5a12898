"""Interfaces: saved exports the console and CLI run by hand or on a schedule.

``model`` (what an interface is), ``store`` (interfaces, their runs, database
connections), ``runner`` (an interface as an ordinary export), ``notify`` (e-mail and
webhook summaries) and ``schedule`` (APScheduler inside ``mailconduit serve``).
"""
