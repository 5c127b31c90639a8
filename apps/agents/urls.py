from django.urls import path

from apps.agents import views

app_name = "agents"
urlpatterns = [
    path("", views.tasks_page, name="list"),
    path("new", views.task_new, name="new"),
    path("<int:task_id>/", views.task_page, name="task"),
    path("<int:task_id>/panel", views.task_panel, name="panel"),
    path("<int:task_id>/plan/edit", views.plan_edit, name="plan-edit"),
    path("<int:task_id>/plan/approve", views.plan_approve, name="plan-approve"),
    path("<int:task_id>/plan/reject", views.plan_reject, name="plan-reject"),
    path("<int:task_id>/cancel", views.task_cancel, name="cancel"),
    path("steps/<int:step_id>/approve", views.step_approve, name="step-approve"),
    path("steps/<int:step_id>/reject", views.step_reject, name="step-reject"),
    path("steps/<int:step_id>/challenge", views.step_challenge, name="step-challenge"),
]
