"""Plumbing shared by every imagesearch service: settings, logging, errors, metrics, server bootstrap."""
