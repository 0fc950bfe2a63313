from django.urls import path
from django.views.generic import RedirectView

from . import views

app_name = "annotation"
urlpatterns = [
    path("", RedirectView.as_view(pattern_name="annotation:index"), name="home"),
    path("annotate/", views.index, name="index"),
    path("annotate/<int:study_id>/", views.vote_page, name="vote"),
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
]
