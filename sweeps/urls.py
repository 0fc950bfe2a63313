from django.urls import path

from . import views

urlpatterns = [
    path("staff/sweeps/", views.sweep_list, name="sweep-list"),
    path("staff/sweeps/<int:sweep_id>/", views.sweep_detail, name="sweep-detail"),
    path(
        "staff/sweeps/<int:sweep_id>/chart.<str:fmt>",
        views.sweep_chart,
        name="sweep-chart",
    ),
]
