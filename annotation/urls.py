from django.urls import path

from . import staff_views, tracker_views, views

app_name = "annotation"
urlpatterns = [
    path("", views.home, name="home"),
    path("annotate/", views.index, name="index"),
    path("annotate/<int:study_id>/", views.vote_page, name="vote"),
    # Staff: their home, all work, the comparison of two studies, leaving an annotator's votes out.
    path("staff/", staff_views.staff_home, name="staff-home"),
    path("staff/runs/", staff_views.staff_runs, name="staff-runs"),
    path("staff/compare/", staff_views.staff_compare, name="staff-compare"),
    path(
        "studies/<int:study_id>/annotators/<int:annotator_id>/exclusion/",
        staff_views.annotator_exclusion,
        name="annotator-exclusion",
    ),
    # Staff: results of a study, its strength chart and downloads.
    path("studies/<int:study_id>/results/", views.results_page, name="results"),
    path(
        "studies/<int:study_id>/results/strength.<str:fmt>",
        views.results_chart,
        name="results-chart",
    ),
    path(
        "studies/<int:study_id>/results/download/<str:fmt>/",
        views.results_download,
        name="results-download",
    ),
    path(
        "studies/<int:study_id>/results/tracker/",
        tracker_views.results_tracker,
        name="results-tracker",
    ),
]
